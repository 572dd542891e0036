"""`make bench`: figures, not assertions (measured in one run on a noisy 2-core machine).

1. cloud-config wall time for both providers with the emulator adding 100 ms to every
   request; requests per provider; ratio to the longest dependent request chain.
2. `defconfig lambdalabs-h100-or-less` median time.
3. Launch race: 200 simulated bringups where 30 % of launches lose their capacity between
   the check and the launch; kcloud's failover (the same launch_first the terraform
   provider runs) against check-once-then-launch, on a virtual clock, through the same
   client rate limiters, with the server's limits audited.
"""
from __future__ import annotations

import os
import random
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from kcloud import errors, providers, tiers
from kcloud.bringup.failover import AllCandidatesFailed, launch_first
from kcloud.http import make_limiters
from kcloud.providers.base import ACTIVE, Instance, SshKey

LATENCY_MS = 100
# Dependent request chains of one cloud-config: Lambda answers in one round
# (instance-types || images); DataCrunch needs the token first, then four reads in parallel.
CHAIN = {"lambdalabs": 1, "datacrunch": 2}
EMULATOR_CREDENTIALS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
                        "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}


def bench_cloud_config(runs: int = 5) -> None:
    from kcloud.emulator import start
    from kcloud.kconfig import generate
    print(f"cloud-config, both providers, emulator latency {LATENCY_MS} ms per request, {runs} runs")
    saved = dict(os.environ)
    walls, counts = [], {}
    try:
        with start(scenario="default", latency_ms=LATENCY_MS) as emu:
            os.environ.update(EMULATOR_CREDENTIALS, LAMBDALABS_API_URL=emu.lambdalabs_url,
                              DATACRUNCH_API_URL=emu.datacrunch_url)
            with tempfile.TemporaryDirectory() as out:
                for _ in range(runs):
                    before = len(emu.state()["requests"])
                    t0 = time.perf_counter()
                    outcomes = generate.cloud_config(list(CHAIN), root=out)
                    walls.append(time.perf_counter() - t0)
                    log = emu.state()["requests"][before:]
                    counts = {p: sum(1 for r in log if r["provider"] == p) for p in CHAIN}
                    failed = [o for o in outcomes if not getattr(o, "ok", True)]
                    if failed:
                        raise errors.KcloudError(f"cloud-config failed during the benchmark: {failed}")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    chain_s = max(CHAIN.values()) * LATENCY_MS / 1000
    median = statistics.median(walls)
    for p, n in counts.items():
        print(f"  {p:11} {n} requests per refresh, dependent chain {CHAIN[p]} x {LATENCY_MS} ms")
    print(f"  wall time: median {median * 1000:.0f} ms (min {min(walls) * 1000:.0f}, max {max(walls) * 1000:.0f})")
    print(f"  ratio to the longest chain ({chain_s * 1000:.0f} ms): {median / chain_s:.2f}  (target <= 1.5)")


def bench_defconfig(runs: int = 15) -> None:
    from kcloud.kconfig import commands
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            commands.defconfig("lambdalabs-h100-or-less", [], config_path=os.path.join(tmp, ".config"))
            times.append(time.perf_counter() - t0)
    print(f"defconfig lambdalabs-h100-or-less, in process, {runs} runs: median {statistics.median(times) * 1000:.0f} ms"
          f" (max {max(times) * 1000:.0f} ms)")
    from kcloud.demo import scratch_project
    with tempfile.TemporaryDirectory() as tmp:
        work = scratch_project(Path(tmp))
        times = []
        for _ in range(runs // 3):
            t0 = time.perf_counter()
            subprocess.run(["make", "-s", "defconfig-lambdalabs-h100-or-less"], cwd=work, check=True,
                           stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
    print(f"make defconfig-lambdalabs-h100-or-less, whole command, {len(times)} runs: "
          f"median {statistics.median(times) * 1000:.0f} ms (max {max(times) * 1000:.0f} ms)  (target <= 500 ms)")


# -- launch race ------------------------------------------------------------------------
class VirtualClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class RaceCloud:
    """A provider on a virtual clock whose capacity is taken by competitors between our check
    and our launch with probability `race`. Calls pass the client limiters from the provider's
    data file; the server side audits the documented limits."""

    name, title, login_user = "lambdalabs", "simulated Lambda", "ubuntu"

    def __init__(self, offers: dict, taken: set, clock: VirtualClock):
        self.capacity, self.taken, self.clock = dict(offers), taken, clock
        limits = providers.data("lambdalabs")["http"]["rate_limits"]
        self.limiters = make_limiters(limits, clock=clock, sleep=clock.sleep)
        self.server_limits = limits
        self.log: list[tuple[float, str]] = []
        self.live: dict[str, Instance] = {}

    def _call(self, kind: str = "general") -> None:
        for name in {"general", kind}:
            self.limiters[name].acquire()
        self.log.append((self.clock(), kind))
        self.clock.sleep(0.05)        # the request's own latency

    def capacity_now(self) -> dict:
        self._call()
        return {t: tuple(r for (tt, r), n in self.capacity.items() if tt == t and n > 0)
                for t in {t for t, _ in self.capacity}}

    def instances(self, name_prefix=None):
        self._call()
        return [i for i in self.live.values() if not name_prefix or i.name.startswith(name_prefix)]

    def launch(self, request) -> str:
        self._call("launch")
        key = (request.instance_type, request.region)
        if key in self.taken:
            self.capacity[key] = 0    # a competitor took it between our check and our launch
        if self.capacity.get(key, 0) <= 0:
            raise errors.CapacityError("insufficient-capacity")
        self.capacity[key] -= 1
        iid = uuid.uuid4().hex
        self.live[iid] = Instance(iid, request.name, request.instance_type, request.region, ACTIVE, "active",
                                  "127.0.0.2", 1.0)
        return iid

    def instance(self, iid):
        self._call()
        return self.live[iid]

    def terminate(self, ids):
        self._call()
        for i in ids:
            self.live.pop(i, None)

    def violations(self) -> int:
        """Requests the server would have answered 429 (token buckets with the documented limits)."""
        bad = 0
        for kind, lim in self.server_limits.items():
            rate = lim.get("per_second") or 1.0 / lim["interval_s"]
            burst, tokens, last = lim.get("burst", 1), lim.get("burst", 1), 0.0
            for t, k in self.log:
                if kind != "general" and k != kind:
                    continue
                tokens = min(burst, tokens + (t - last) * rate)
                last = t
                if tokens < 1 - 1e-9:
                    bad += 1
                else:
                    tokens -= 1
        return bad


def bench_launch_race(bringups: int = 200, race: float = 0.3, seed: int = 1) -> None:
    rng = random.Random(seed)
    snap = providers.snapshot("lambdalabs")
    selection = tiers.parse("lambdalabs", "h100-or-less")
    regions = ["us-west-1", "us-east-1", "us-south-1", "europe-central-1"]
    group_types = [n for _, names in tiers.tiers_of("lambdalabs", selection, snap) for n in names]
    results = {"kcloud failover": [0, 0, 0, 0, 0], "check once, then launch": [0, 0, 0, 0, 0]}
    eligible = 0
    for _ in range(bringups):
        offers = {(t, r): rng.randint(1, 2) for t in group_types for r in regions if rng.random() < 0.15}
        if not offers:
            offers = {(rng.choice(group_types), rng.choice(regions)): 1}
        taken = {o for o in offers if rng.random() < race}   # same draws for both strategies
        has_capacity = len(taken) < len(offers)
        eligible += has_capacity
        for label in results:
            clock = VirtualClock()
            cloud = RaceCloud(offers, taken, clock)
            snap.capacity = cloud.capacity_now()
            candidates = tiers.plan("lambdalabs", selection, snap).candidates
            ok = False
            if label == "kcloud failover":
                try:
                    launch_first(cloud, candidates, name="kdevops-gpu", ssh_key=SshKey("k", "k", ""),
                                 boot_timeout=60, poll_interval=5, sleep=clock.sleep)
                    ok = True
                except AllCandidatesFailed:
                    pass
            else:
                try:
                    from kcloud.providers.base import LaunchRequest
                    c = candidates[0]
                    cloud.launch(LaunchRequest(c.instance_type, c.region, "kdevops-gpu", "k", "k"))
                    ok = True
                except errors.CapacityError:
                    pass
            r = results[label]
            r[0] += ok
            r[4] += ok and has_capacity
            r[1] += len(cloud.log)
            r[2] += cloud.violations()
            r[3] += sum(1 for _, k in cloud.log if k == "launch")
    print(f"launch race: {bringups} bringups (tier group h100-or-less), {race:.0%} of offers lose their "
          f"capacity between check and launch; {eligible} runs still had capacity for some candidate")
    for label, (ok, reqs, bad, launches, ok_eligible) in results.items():
        print(f"  {label:24} success {ok_eligible / eligible:6.1%} when some candidate had capacity "
              f"({ok / bringups:6.1%} of all)   API requests/bringup {reqs / bringups:5.2f}   "
              f"launches/bringup {launches / bringups:4.2f}   over the rate limits: {bad}")


def cmd_bench(args) -> int:
    parts = args.only or ["cloud-config", "defconfig", "launch-race"]
    if "cloud-config" in parts:
        bench_cloud_config()
    if "defconfig" in parts:
        bench_defconfig()
    if "launch-race" in parts:
        bench_launch_race()
    return 0


def register(sub) -> None:
    b = sub.add_parser("bench", help="benchmarks that print figures")
    b.add_argument("--only", action="append", choices=["cloud-config", "defconfig", "launch-race"])
    b.set_defaults(func=cmd_bench)
