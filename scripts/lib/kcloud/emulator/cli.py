"""`emulator [--scenario NAME|FILE] [--lambdalabs-port N] ...`: serve until SIGTERM/SIGINT.

The first stdout lines are `export` statements a shell can eval: each served provider's
`<PROVIDER>_API_URL` (Lambda, then DataCrunch: `eval "$(emulator ... | head -2)"` finds the
ports), then `KCLOUD_EMULATOR_PROVIDERS="lambdalabs datacrunch"`, the providers served.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .emulator import SSH_MODES, Emulator, EmulatorError, overrides
from .scenario import load


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emulator", description="Loopback emulator of the Lambda Cloud and DataCrunch/Verda APIs."
    )
    p.add_argument(
        "--scenario", default="default", help="scenario name (scenarios/*.yaml) or YAML file (default: default)"
    )
    p.add_argument(
        "--lambdalabs-port", type=int, default=0, metavar="N", help="Lambda API port (default: any free port)"
    )
    p.add_argument(
        "--datacrunch-port", type=int, default=0, metavar="N", help="DataCrunch API port (default: any free port)"
    )
    p.add_argument("--latency-ms", type=int, metavar="N", help="added to every API answer (overrides the scenario)")
    p.add_argument(
        "--boot-delay", type=float, metavar="SECONDS", help="launch to active/running (overrides the scenario)"
    )
    p.add_argument(
        "--install-delay",
        type=float,
        metavar="SECONDS",
        help="DataCrunch: added to the first boot from a fresh OS volume (overrides the scenario)",
    )
    p.add_argument(
        "--ssh-port", type=int, metavar="N", help="port of the instances' sshd (default: 22 as root, else 2222)"
    )
    p.add_argument(
        "--time-scale",
        type=float,
        metavar="X",
        help="emulator (market) seconds per real second (overrides the scenario's clock.time_scale)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="make the per-run work dir (machine roots, volumes, sshd files, logs) here and keep it after stop",
    )
    p.add_argument(
        "--ssh",
        choices=SSH_MODES,
        default="auto",
        help="auto: sshd per instance if installed, else warn; required: fail without sshd; off: never (default: auto)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        scenario = load(
            args.scenario,
            overrides(args.latency_ms, args.boot_delay, args.ssh_port, args.time_scale, args.install_delay),
        )
        emulator = Emulator(
            scenario,
            lambdalabs_port=args.lambdalabs_port,
            datacrunch_port=args.datacrunch_port,
            state_dir=args.state_dir,
            ssh=args.ssh,
        )
    except (OSError, ValueError, EmulatorError) as exc:
        print(f"emulator: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        emulator.start()
        for name, url in emulator.urls.items():    # <PROVIDER>_API_URL, as kcloud reads it
            print(f"export {name.upper()}_API_URL={url}")
        # Last, so `head -2` still gets the two URLs: which providers are served.
        print(f'export KCLOUD_EMULATOR_PROVIDERS="{" ".join(emulator.urls)}"', flush=True)
        print(
            f"emulator: scenario {scenario.name}; admin: {emulator.lambdalabs_url.split('/api')[0]}/_emulator/state",
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1):
            pass
    finally:
        emulator.stop()
    return 0
