"""Helpers the end-to-end tests share."""
import os
import signal
import time


def audit(emulator) -> dict:
    """What is left in the cloud; every end-to-end test ends by asserting it is nothing."""
    state = emulator.state()
    return {"instances": [(i.get("provider"), i.get("name") or i.get("hostname"), i.get("status"))
                          for i in state["instances"]],
            "ssh_keys": [(k.get("provider"), k.get("name")) for k in state["ssh_keys"]]}


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
