"""`make demo`: the main job end to end on the bundled emulator, for every provider it serves.

Runs the same make targets a user types, in a scratch copy of the project with a scratch
HOME, so the user's .config, ~/.ssh/config and credentials are never touched.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kcloud import errors

REPO = Path(__file__).resolve().parents[3]
COPY = ["Makefile", "Kconfig", "kconfigs", "defconfigs", "terraform", "playbooks", "requirements.txt",
        "requirements-test.txt"]
# The defconfig each provider's flow loads (else defconfig-<provider>), and what its
# credentials `set` reads from stdin; the flows are the providers the emulator serves.
DEFCONFIGS = {"lambdalabs": "lambdalabs-h100-or-less", "datacrunch": "datacrunch-h100-pytorch-or-less"}
CREDENTIALS = {"lambdalabs": "emulator-key\n", "datacrunch": "emulator-client\nemulator-secret\n"}
MAX_EXPORT_LINES = 16


def banner(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


class Emulator:
    """The emulator as a separate process, as a user would run it (scripts/kcloud emulator)."""

    def __init__(self, scenario: str, boot_delay: float, ssh_port: int | None, env: dict):
        cmd = [str(REPO / "scripts" / "kcloud"), "emulator", "--scenario", scenario, "--boot-delay", str(boot_delay),
               "--ssh", "required"]   # no sshd: fail at once with the fix, not after minutes of SSH waits
        if ssh_port:
            cmd += ["--ssh-port", str(ssh_port)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        self.urls, self.providers = {}, []
        for _ in range(MAX_EXPORT_LINES):       # URL exports, then KCLOUD_EMULATOR_PROVIDERS
            line = self.proc.stdout.readline().strip()
            if not line.startswith("export "):
                self.stop()
                raise errors.KcloudError(f"the emulator did not start (said: {line!r})")
            key, _, value = line[len("export "):].partition("=")
            if key == "KCLOUD_EMULATOR_PROVIDERS":
                self.providers = served_providers(self.urls, value.strip('"').split())
                break
            self.urls[key] = value
        else:
            self.stop()
            raise errors.KcloudError("the emulator did not say which providers it serves")

    def state(self, key: str) -> dict:
        base = self.urls[key].split("/api/")[0].split("/v1")[0]
        with urllib.request.urlopen(f"{base}/_emulator/state", timeout=10) as r:
            return json.load(r)

    def admin(self, key: str, what: str, body: dict) -> dict:
        """POST /_emulator/<what> on the port of `key` (e.g. capacity changes for a scene)."""
        base = self.urls[key].split("/api/")[0].split("/v1")[0]
        req = urllib.request.Request(f"{base}/_emulator/{what}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def served_providers(urls: dict[str, str], announced: list[str]) -> list[str]:
    """The providers to demo: those the emulator announced (in its order) that kcloud has and
    whose URL variable (the data file's api_url_env) it exported. A provider kcloud has but the
    emulator does not serve is left out: its real API would be asked otherwise."""
    from kcloud import providers
    known = providers.names()
    return [p for p in announced
            if p in known and providers.data(p)["api_url_env"] in urls and p in CREDENTIALS]


def scratch_project(root: Path) -> Path:
    """A copy of the project (Kconfig tree, terraform, playbooks) sharing scripts/ and .venv."""
    work = root / "kcloud"
    work.mkdir()
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns(
                "*.generated", "terraform.tfstate*", ".terraform*", "terraform.tfvars", ".plugins", "terraformrc"))
        else:
            shutil.copy2(src, work / name)
    (work / "scripts").symlink_to(REPO / "scripts")
    (work / ".venv").symlink_to(REPO / ".venv")
    return work


def run(cmd: list[str], cwd: Path, env: dict, check: bool = True) -> int:
    print(f"$ {' '.join(cmd)}", flush=True)
    quiet = ["--no-print-directory"] if cmd[0] == "make" else []
    code = subprocess.run(cmd[:1] + quiet + cmd[1:], cwd=cwd, env=env, stdin=subprocess.DEVNULL).returncode
    if check and code:
        raise errors.KcloudError(f"demo step failed: {' '.join(cmd)} (exit {code})")
    return code


def cmd_demo(args) -> int:
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="kcloud-demo-"))
    home = root / "home"
    home.mkdir()
    root_user = os.geteuid() == 0
    ssh_port = None if root_user else 2222
    env = {**os.environ, "HOME": str(home), "KCLOUD_HTTP_BACKOFF": "0.2"}
    env.pop("TF_CLI_CONFIG_FILE", None)
    emulator = None
    audit_ok = True
    try:
        work = scratch_project(root)
        banner("Starting the emulator with the 'scarce' scenario (Lambda: no GH200/H100; DataCrunch: no B300/B200/H100)")
        emulator = Emulator(args.scenario, args.boot_delay, ssh_port, env)
        for key, url in emulator.urls.items():
            print(f"export {key}={url}")
        env.update(emulator.urls)
        flows = [(p, DEFCONFIGS.get(p, p)) for p in emulator.providers]
        for provider, _ in flows:
            banner(f"Credentials for {provider} (in the demo's own HOME: {home})")
            print(f"$ scripts/{provider}_credentials.py set   # values read from stdin, never on the command line")
            subprocess.run([str(work / "scripts" / f"{provider}_credentials.py"), "set"], cwd=work, env=env,
                           input=CREDENTIALS[provider], text=True, check=True)
        banner(f"Refresh the Kconfig menus from the live APIs of {', '.join(emulator.providers)}")
        from kcloud import providers
        if emulator.providers == providers.names():
            run(["make", "cloud-config"], work, env)
        else:                                   # only what the emulator serves
            for provider in emulator.providers:
                run(["make", f"cloud-config-{provider}"], work, env)
        run(["sh", "-c", "grep -h '\u2713' terraform/lambdalabs/kconfigs/Kconfig.compute.generated | head -5"], work, env,
            check=False)
        for provider, defconfig in flows:
            sets = [f"SSH_CONFIG_PORT={ssh_port}", f"SSH_CONFIG_USER={os.environ.get('USER', 'root')}"] if ssh_port else []
            banner(f"{provider}: configure, bring up (falling back past sold-out tiers), use, destroy")
            run(["make", f"defconfig-{defconfig}", *sets], work, env)
            run(["make", "bringup"], work, env)
            host = "kdevops-gpu"
            banner(f"{provider}: run a command on the machine over SSH")
            run(["ssh", "-F", str(work / ".kcloud" / "ssh_config"), host, "uname -n; cat ~/.kcloud-host"], work, env)
            run([str(REPO / ".venv" / "bin" / "ansible"), "all", "-i", "hosts", "-m", "ping"], work,
                {**env, "ANSIBLE_CONFIG": str(work / "playbooks" / "ansible.cfg")})
            run(["make", "status"], work, env)
            if provider == "datacrunch":
                banner("datacrunch: lose terraform state and the journal; the tags (and our key) still prove "
                       "which machine is ours")
                run(["sh", "-c", "rm -f terraform/datacrunch/terraform.tfstate* .kcloud/journal.jsonl"], work, env)
                run(["make", "status"], work, env)
            run(["make", "destroy"], work, env)
            key = f"{provider.upper()}_API_URL"
            state = emulator.state(key)
            left = {kind: n for kind, n in state.get("billable", {}).items() if n}
            left_i, left_k = len(state.get("instances", [])), len(state.get("ssh_keys", []))
            banner(f"{provider}: emulator audit: {left_i} instances, {left_k} SSH keys, "
                   f"{sum(left.values()) - left_i - left_k} volumes/scripts/file systems left")
            audit_ok &= left_i == 0 and left_k == 0 and not left
        if {"lambdalabs", "datacrunch"} <= set(emulator.providers):
            audit_ok &= _market_scene(emulator, work, env, ssh_port)
        if "lambdalabs" in emulator.providers:
            audit_ok &= _cluster_scene(emulator, work, env, ssh_port)
        if "lambdalabs" in emulator.providers:
            audit_ok &= _job_scene(emulator, work, env, ssh_port)
        banner(f"Demo finished in {time.monotonic() - started:.0f} s; audit {'clean' if audit_ok else 'NOT CLEAN'}")
        return 0 if audit_ok else 1
    finally:
        if emulator:
            emulator.stop()
        shutil.rmtree(root, ignore_errors=True)


def _market_scene(emulator: Emulator, work: Path, env: dict, ssh_port: int | None) -> bool:
    """Issue 8: one list across both clouds, waiting out a sold-out market, the bill."""
    banner("Both clouds in one list: the merged live offers")
    run([str(work / "scripts" / "kcloud"), "offers", "--gpu", "H100"], work, env)
    banner("Everything sold out on both clouds; bringup waits (WAIT=2m) and takes the first H100 that appears")
    for key in ("LAMBDALABS_API_URL", "DATACRUNCH_API_URL"):
        emulator.admin(key, "capacity", {"instance_type": "*", "region": "*", "count": 0})
    sets = [f"SSH_CONFIG_PORT={ssh_port}", f"SSH_CONFIG_USER={os.environ.get('USER', 'root')}"] if ssh_port else []
    run(["make", "defconfig-any-h100-or-less", *sets], work, env)
    print("$ make bringup WAIT=2m   # (the demo opens an H100 on DataCrunch after 8 s)", flush=True)
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup", "WAIT=2m"], cwd=work, env=env,
                            stdin=subprocess.DEVNULL)
    try:
        time.sleep(8)
        emulator.admin("DATACRUNCH_API_URL", "capacity", {"instance_type": "1H100.80S.30V", "region": "FIN-01",
                                                          "count": 1})
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
    if code:
        raise errors.KcloudError(f"demo step failed: make bringup WAIT=2m (exit {code})")
    run(["make", "status"], work, env)
    run(["make", "destroy"], work, env)
    banner("What this directory paid, at the price recorded at launch, by the provider's billing increment")
    run(["make", "cost"], work, env)
    left = {k: n for k, n in emulator.state("LAMBDALABS_API_URL").get("billable", {}).items() if n}
    banner(f"market scene: emulator audit: {'nothing left' if not left else left}")
    return not left


def _cluster_scene(emulator: Emulator, work: Path, env: dict, ssh_port: int | None) -> bool:
    """Issue 9: three nodes all or nothing, a startup script, a shared file system kept by destroy."""
    banner("A 3-node H100 cluster with a shared file system and a startup script on every node")
    emulator.admin("LAMBDALABS_API_URL", "capacity", {"instance_type": "gpu_1x_h100_pcie", "region": "*", "count": 3})
    (work / "startup.sh").write_text("#!/bin/sh\necho \"startup script ran at $(date -u +%T)\" > \"$HOME/startup-ran\"\n")
    sets = [f"SSH_CONFIG_PORT={ssh_port}", f"SSH_CONFIG_USER={os.environ.get('USER', 'root')}"] if ssh_port else []
    run(["make", "defconfig-lambdalabs-cluster-3x-h100", *sets], work, env)
    run([str(work / "scripts" / "kcloud"), "defconfig", "lambdalabs-cluster-3x-h100", "--set=KCLOUD_STARTUP_SCRIPT=\"startup.sh\"",
         *[f"--set={s}" for s in sets]], work, env)
    run(["make", "bringup"], work, env)
    ssh = ["ssh", "-F", str(work / ".kcloud" / "ssh_config")]
    banner("Each node: its own rank, the same MASTER_ADDR; the startup script ran; the file system is shared")
    run(ssh + ["kdevops-gpu-02", "cat ~/.kcloud/cluster.env ~/startup-ran"], work, env)
    run(ssh + ["kdevops-gpu-01", '. ~/.kcloud/cluster.env && echo "hello from node $NODE_RANK" > "$KCLOUD_SHARED_DIR/hello"'],
        work, env)
    run(ssh + ["kdevops-gpu-03", '. ~/.kcloud/cluster.env && cat "$KCLOUD_SHARED_DIR/hello"'], work, env)
    run(["make", "status"], work, env)
    run(["make", "destroy"], work, env)
    banner("make destroy kept the file system (it holds data); make destroy-storage removes it")
    run(["make", "status"], work, env)
    run(["make", "destroy-storage", "YES=1"], work, env)
    left = {k: n for k, n in emulator.state("LAMBDALABS_API_URL").get("billable", {}).items() if n}
    banner(f"cluster scene: emulator audit: {'nothing left' if not left else left}")
    return not left


TRAIN_PY = '''\
import json, os, time
epochs = int(os.environ.get("EPOCHS", "3"))
print(f"node {os.environ['NODE_RANK']} of {os.environ['NNODES']}: {epochs} epochs", flush=True)
loss = 2.0
for epoch in range(1, epochs + 1):
    time.sleep(0.5)
    loss *= 0.6
    print(f"epoch {epoch}: loss {loss:.3f}", flush=True)
os.makedirs("out", exist_ok=True)
with open("out/adapter.bin", "wb") as f:
    f.write(os.urandom(256 * 1024))
with open("out/metrics.json", "w") as f:
    json.dump({"epochs": epochs, "loss": round(loss, 3)}, f)
print("saved out/adapter.bin and out/metrics.json", flush=True)
'''


def _job_scene(emulator: Emulator, work: Path, env: dict, ssh_port: int | None) -> bool:
    """Issue 10: run work on the machine -- submit, stream the log, fetch, destroy when it ends."""
    banner("Run work on a machine: submit a job, stream its log, fetch what it made, stop paying")
    sets = [f"SSH_CONFIG_PORT={ssh_port}", f"SSH_CONFIG_USER={os.environ.get('USER', 'root')}"] if ssh_port else []
    run(["make", "defconfig-lambdalabs", *sets], work, env)
    run(["make", "bringup"], work, env)
    src = work.parent / "finetune"
    (src / "data").mkdir(parents=True)
    (src / "train.py").write_text(TRAIN_PY)
    (src / ".gitignore").write_text("data/\n")
    (src / "data" / "cache.bin").write_bytes(bytes(1_000_000))      # ignored: never uploaded
    env = {**env, "KCLOUD_WATCHDOG_TICK_S": "1"}
    job = _submit(work, env, f"DIR={src}", "SETUP=python3 -c 'print(\"deps ok\")'", "ARTIFACTS=out",
                  "JOB_ENV=EPOCHS=4", "CMD=python3 -u train.py")
    run(["make", "job-logs", "FOLLOW=1"], work, env)
    run(["make", "job-status"], work, env)
    run(["make", "job-fetch"], work, env)
    run(["ls", "-l", f"artifacts/{job}/out"], work, env)
    banner("THEN=destroy: when this job ends the watchdog fetches its artifacts, then destroys the machine "
           "(the terminal may close)")
    job = _submit(work, env, f"DIR={src}", "ARTIFACTS=out", "JOB_ENV=EPOCHS=2", "THEN=destroy",
                  "CMD=python3 -u train.py")
    run(["make", "status"], work, env)
    deadline = time.monotonic() + 180
    while emulator.state("LAMBDALABS_API_URL")["instances"] and time.monotonic() < deadline:
        time.sleep(1)
    log = work / ".kcloud" / "watchdog.log"
    while "exiting" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.5)
    run(["tail", "-n", "8", ".kcloud/watchdog.log"], work, env)
    run(["make", "job-list"], work, env)
    run(["make", "job-status", f"ID={job}"], work, env)
    run(["ls", "-l", f"artifacts/{job}/out"], work, env)
    left = {k: n for k, n in emulator.state("LAMBDALABS_API_URL").get("billable", {}).items() if n}
    banner(f"job scene: emulator audit: {'nothing left' if not left else left}")
    return not left


def _submit(work: Path, env: dict, *variables: str) -> str:
    """make job-submit, its output shown; the job id is its last line."""
    print(f"$ make job-submit {' '.join(variables)}", flush=True)
    proc = subprocess.run(["make", "--no-print-directory", "job-submit", *variables], cwd=work, env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.returncode:
        raise errors.KcloudError(f"demo step failed: make job-submit (exit {proc.returncode})")
    return proc.stdout.strip().splitlines()[-1]


def register(sub) -> None:
    d = sub.add_parser("demo", help="the main job end to end on the bundled emulator")
    d.add_argument("--scenario", default="scarce")
    d.add_argument("--boot-delay", type=float, default=3.0)
    d.set_defaults(func=cmd_demo)
