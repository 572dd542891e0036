"""Helpers the end-to-end tests share."""
import os
import signal
import time


def audit(emulator) -> dict:
    """What is left in the cloud; every end-to-end test ends by asserting it is nothing."""
    state = emulator.state()
    left = {"instances": [(i.get("provider"), i.get("name") or i.get("hostname"), i.get("status"))
                          for i in state["instances"]],
            "ssh_keys": [(k.get("provider"), k.get("name")) for k in state["ssh_keys"]]}
    # Volumes (also in the trash), file systems and startup scripts: any left is a leak too.
    left.update({kind: n for kind, n in state.get("billable", {}).items() if n and kind not in left})
    return left


def wait_for(predicate, timeout=60, interval=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def billable(emulator) -> dict:
    """Every kind of resource still counted in /_emulator/state (instances, volumes also in
    the trash, file systems, keys, scripts): {} when nothing is left."""
    return {kind: n for kind, n in emulator.state()["billable"].items() if n}


def add_faults(emulator, provider: str, specs: list) -> None:
    import requests
    base = emulator.lambdalabs_url if provider == "lambdalabs" else emulator.datacrunch_url
    root = base.split("/", 3)[:3]
    requests.post("/".join(root) + "/_emulator/faults", json=specs, timeout=10).raise_for_status()


def clear_faults(emulator, provider: str) -> None:
    import requests
    base = emulator.lambdalabs_url if provider == "lambdalabs" else emulator.datacrunch_url
    root = base.split("/", 3)[:3]
    requests.delete("/".join(root) + "/_emulator/faults", timeout=10).raise_for_status()
