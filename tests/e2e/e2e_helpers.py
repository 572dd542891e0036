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


def launches(emulator, provider: str = "lambdalabs") -> list[dict]:
    """Launch requests the emulator saw (Lambda's launch, DataCrunch's instance create)."""
    return [r for r in emulator.state()["requests"] if r["provider"] == provider and r["method"] == "POST"
            and r["path"].endswith(("/instance-operations/launch", "/instances"))]


def processes_under(root) -> list[tuple[int, str]]:
    """Processes whose working directory is `root` or below (terraform, the plugin, a bringup)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cwd == str(root) or cwd.startswith(f"{root}/"):
            found.append((int(pid), cmd.strip()))
    return found
