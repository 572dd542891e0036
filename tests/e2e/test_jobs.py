"""Issue 10: jobs on the machines, end to end -- the real make targets and scripts/kcloud, real
terraform, Ansible, sshd and rsync against the emulator. One single-node bringup is shared by
the tests that leave the machine up (module fixture `machine`); --then destroy and the 3-node
cluster have their own. Every bringup ends with an /_emulator/state audit (nothing billable
left) and no process of a job, or under the project, left behind."""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kcloud.demo import scratch_project
from kcloud.emulator import start

from e2e_helpers import audit, processes_under, wait_for

REPO = Path(__file__).resolve().parents[2]
KCLOUD = str(REPO / "scripts" / "kcloud")
CREDS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
         "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}
CLEAN = {"instances": [], "ssh_keys": []}
# Room for three 1x A10 nodes in one region (the default scenario has one machine per cell).
A10_X3 = {"extends": "default", "lambdalabs": {"capacity": [
    {"type": "*", "region": "*", "count": 1}, {"type": "gpu_1x_a10", "region": "*", "count": 3}]}}

if shutil.which("rsync") is None:
    pytest.skip("kcloud job needs rsync (make test installs it: scripts/install-system-deps)", allow_module_level=True)


class Machine:
    """A scratch project brought up on the emulator, driven as a user would."""

    def __init__(self, root: Path, env: dict, emulator):
        self.root, self.env, self.emulator = root, env, emulator

    def run(self, *cmd, check=True, timeout=240, env=None):
        proc = subprocess.run(list(cmd), cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(cmd)} exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def make(self, *targets, **kw):
        return self.run("make", "--no-print-directory", *targets, **kw)

    def job(self, *args, **kw):
        return self.run(KCLOUD, "job", *args, **kw)

    def submit(self, *args, **kw) -> str:
        out = self.job("submit", *args, **kw).stdout
        job_id = out.strip().splitlines()[-1]
        assert re.fullmatch(r"[a-z0-9]{8}", job_id), out        # the id alone on the last line
        return job_id

    def status(self, job_id) -> dict:
        return json.loads(self.job("status", job_id, "--output", "json").stdout)

    def wait_status(self, job_id, wanted=("succeeded", "failed", "cancelled"), timeout=60) -> dict:
        got = {}

        def ended():
            got.update(self.status(job_id))
            return got["status"].split()[0] in wanted
        assert wait_for(ended, timeout=timeout, interval=0.3), got
        return got

    def instances(self) -> list[dict]:
        return self.emulator.state()["instances"]

    def node_home(self, name=None) -> Path:
        inst = [i for i in self.instances() if name is None or i["name"] == name]
        return Path(inst[0]["home"])


def bring_up(tmp_path_factory, scenario="default", sets=(), defconfig="lambdalabs-gpu-1x-a10"):
    emu = start(scenario, boot_delay=0.3)
    base = tmp_path_factory.mktemp("jobs")
    root = scratch_project(base)
    home = base / "home"
    home.mkdir()
    env = {**os.environ, **CREDS, "HOME": str(home), "LAMBDALABS_API_URL": emu.lambdalabs_url,
           "DATACRUNCH_API_URL": emu.datacrunch_url, "KCLOUD_HTTP_BACKOFF": "0.2", "KCLOUD_WATCHDOG_TICK_S": "1"}
    env.pop("TF_CLI_CONFIG_FILE", None)
    m = Machine(root, env, emu)
    ssh = [] if os.geteuid() == 0 else ["SSH_CONFIG_PORT=2222", f"SSH_CONFIG_USER={os.environ.get('USER')}"]
    try:
        m.run(KCLOUD, "defconfig", defconfig, *[f"--set={s}" for s in [*sets, *ssh]])
        m.make("bringup")
    except BaseException:
        tear_down(m, check=False)
        raise
    return m


def job_processes(emu) -> list[tuple[int, str]]:
    """Live processes of any job on this emulator's machines (KCLOUD_JOB_DIR under its work dir)."""
    mark = f"KCLOUD_JOB_DIR={emu.workdir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if not any(v.startswith(mark) for v in environ.read_bytes().split(b"\0")):
                continue
            stat = (environ.parent / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            found.append((int(environ.parent.name), (environ.parent / "cmdline").read_bytes()
                          .replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, IndexError):
            continue
    return found


def tear_down(m: Machine, check=True):
    try:
        if m.emulator.state()["instances"]:
            m.make("destroy", check=False)
        left = audit(m.emulator)
        procs = []
        if not wait_for(lambda: not job_processes(m.emulator) and not processes_under(m.root), timeout=30):
            procs = job_processes(m.emulator) + processes_under(m.root)
        if check:
            assert left == CLEAN, left
            assert not procs, f"processes left behind: {procs}"
    finally:
        for pid, _cmd in job_processes(m.emulator) + processes_under(m.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        m.emulator.stop()


@pytest.fixture(scope="module")
def machine(tmp_path_factory):
    m = bring_up(tmp_path_factory)
    yield m
    tear_down(m)


def one_error(proc) -> str:
    """The failure is one `error:` line, a non-zero exit and no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


TRAIN = """\
import hashlib, os, sys, time
print("rank", os.environ["NODE_RANK"], "of", os.environ["NNODES"], "master", os.environ["MASTER_ADDR"],
      "lr", os.environ["LR"], "setup", open(".setup-done").read().strip(), flush=True)
for i in range(12):
    print(f"step {i} loss {1 / (i + 1):.4f} \u2713", flush=True)
    print(f"warn {i}", file=sys.stderr, flush=True)
    time.sleep(0.15)
os.makedirs("out/ckpt", exist_ok=True)
blob = os.urandom(3 * 1024 * 1024)
open("out/model.bin", "wb").write(blob)
open("out/ckpt/epoch1.pt", "wb").write(blob[:1000])
print("sha256", hashlib.sha256(blob).hexdigest(), flush=True)
sys.stdout.write("no newline at the end")
"""


def expected_log(sha: str) -> bytes:
    """What TRAIN writes, byte for byte (stdout and stderr interleaved as written, flushed)."""
    lines = []
    for i in range(12):
        lines.append(f"step {i} loss {1 / (i + 1):.4f} \u2713\n")
        lines.append(f"warn {i}\n")
    return "".join(lines).encode() + f"sha256 {sha}\nno newline at the end".encode()


def test_job_streams_its_log_and_fetches_artifacts_byte_for_byte(machine, tmp_path):
    m = machine
    src = tmp_path / "src"
    (src / "data").mkdir(parents=True)
    (src / "train.py").write_text(TRAIN)
    (src / "data" / "huge.bin").write_bytes(b"x" * 4096)       # ignored by .gitignore
    (src / "notes.tmp").write_text("scratch")                   # ignored by .kcloudignore
    (src / ".gitignore").write_text("data/\n")
    (src / ".kcloudignore").write_text("*.tmp\n")
    # Through make, as the kdevops targets are used: every value one word, lists split by make.
    out = m.make("job-submit", f"DIR={src}", "SETUP=echo ready > .setup-done", "ARTIFACTS=out/model.bin out/ckpt",
                 "JOB_ENV=LR=3e-4", "CMD=python3 -u train.py").stdout
    job_id = out.strip().splitlines()[-1]
    assert re.fullmatch(r"[a-z0-9]{8}", job_id) and "kdevops-gpu: 3 files" in out, out   # 3: .gitignore too

    follow = m.run("make", "--no-print-directory", "job-logs", f"ID={job_id}", "FOLLOW=1", timeout=60)
    work = m.node_home() / ".kcloud" / "jobs" / job_id / "work"
    sha = hashlib.sha256((work / "out" / "model.bin").read_bytes()).hexdigest()
    streamed = follow.stdout.encode()
    first, _, rest = streamed.partition(b"\n")
    assert first.decode().startswith("rank 0 of 1 master ") and first.decode().endswith("lr 3e-4 setup ready")
    assert rest == expected_log(sha)                             # streamed while it ran, then ended
    assert not (work / "data").exists() and not (work / "notes.tmp").exists()

    st = m.status(job_id)
    assert st["status"] == "succeeded (exit 0)" and st["nodes"][0]["exit"] == 0
    assert st["price_per_hour"] > 0 and st["cost_so_far"] is not None
    text = m.make("job-status", f"ID={job_id}").stdout
    assert f"Job {job_id}: succeeded (exit 0), runtime" in text and "the launch price" in text

    fetched = m.make("job-fetch", f"ID={job_id}").stdout
    dest = m.root / "artifacts" / job_id
    assert f"-> {dest}" in fetched
    assert (dest / "out" / "model.bin").read_bytes() == (work / "out" / "model.bin").read_bytes()
    assert (dest / "out" / "ckpt" / "epoch1.pt").read_bytes() == (work / "out" / "ckpt" / "epoch1.pt").read_bytes()

    # Resumable: an interrupted transfer leaves its partial file; the next fetch continues it.
    blob = (work / "out" / "model.bin").read_bytes()
    (dest / "out" / "model.bin").unlink()
    (dest / "out" / ".kcloud-partial").mkdir()
    (dest / "out" / ".kcloud-partial" / "model.bin").write_bytes(blob[:2 * 1024 * 1024])
    again = m.job("fetch", job_id).stdout
    number, unit = re.search(r"\(([\d.]+) (B|KB|MB) transferred\)", again).groups()
    assert (dest / "out" / "model.bin").read_bytes() == blob
    assert float(number) * {"B": 1, "KB": 1e3, "MB": 1e6}[unit] < 2e6, again    # the rest, not all 3 MB again
    # A custom destination, and the same bytes.
    other = m.job("fetch", job_id, "out/model.bin", "--to", str(tmp_path / "elsewhere")).stdout
    assert (tmp_path / "elsewhere" / "out" / "model.bin").read_bytes() == blob, other

    listing = m.make("job-list").stdout
    assert re.search(rf"^{job_id}\s+succeeded \(exit 0\)\s+1 ", listing, re.M), listing


def test_job_survives_a_killed_ssh_connection(machine, tmp_path):
    m = machine
    src = tmp_path / "src"
    src.mkdir()
    (src / "tick.sh").write_text("for i in $(seq 1 25); do echo tick $i; sleep 0.1; done; echo finished > done.txt\n")
    # The submit waits for the setup in the very session that started the job; cut it there.
    submit = subprocess.Popen([KCLOUD, "job", "submit", "--dir", str(src), "--setup", "sleep 5",
                               "--artifacts", "done.txt", "--", "bash tick.sh"], cwd=m.root, env=m.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sshd = m.instances()[0]["ssh"]["pid"]

    def waiting_for_setup():          # started (its pid is recorded), the submit still waiting
        for f in (m.root / ".kcloud" / "jobs").glob("*.json"):
            rec = json.loads(f.read_text())
            if rec["setup"] == "sleep 5" and rec["state"] == "submitting" and rec["nodes"][0].get("pid"):
                return True
        return False
    assert wait_for(waiting_for_setup, timeout=30)
    assert sessions_of(sshd)
    for pid in sessions_of(sshd):                 # the server side of every connection: gone
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass                                  # a short-lived child that just ended
    out, err = submit.communicate(timeout=60)
    assert "Traceback" not in out + err
    job_id = out.strip().splitlines()[-1]
    assert "lost the connection while waiting for the setup" in out and "the job goes on there" in out, out + err
    st = m.wait_status(job_id, timeout=60)
    assert st["status"] == "succeeded (exit 0)", st
    first = job_id
    log = m.job("logs", job_id).stdout
    assert log == "".join(f"tick {i}\n" for i in range(1, 26))

    # A follower whose connection dies says so in one line; the job is not touched. (The same
    # directory again: its unchanged files are copied on the node, not sent.)
    out = m.job("submit", "--dir", str(src), "--", "bash tick.sh").stdout
    job_id = out.strip().splitlines()[-1]
    assert f"(0 B sent, the rest copied from job {first} on the node)" in out, out
    follower = subprocess.Popen([KCLOUD, "job", "logs", job_id, "-f"], cwd=m.root, env=m.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert wait_for(lambda: ssh_children(follower.pid), timeout=20)
    time.sleep(0.5)
    for pid in ssh_children(follower.pid):
        os.kill(pid, signal.SIGKILL)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 1 and b"lost the connection to kdevops-gpu" in err and b"Traceback" not in err
    assert m.wait_status(job_id, timeout=60)["status"] == "succeeded (exit 0)"
    assert m.job("logs", job_id).stdout == "".join(f"tick {i}\n" for i in range(1, 26))


def sessions_of(sshd_pid: int) -> list[int]:
    """The sshd session processes (and what they run) of one emulated machine."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [sshd_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def ssh_children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            name = text[text.index("(") + 1:text.rindex(")")]
            ppid = int(text.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and name == "ssh":
            out.append(int(stat.parent.name))
    return out


def test_cancel_ends_every_process_of_the_job(machine, tmp_path):
    m = machine
    src = tmp_path / "src"
    src.mkdir()
    # A tree: a child, a grandchild that ignores TERM, one that left the process group
    # (setsid), and a foreground Python.
    (src / "tree.sh").write_text(
        "sleep 300 &\n(trap '' TERM; sleep 301) &\nsetsid sleep 302 &\n"
        "python3 -c 'import time; time.sleep(303)'\n")
    job_id = m.submit("--dir", str(src), "--", "bash tree.sh")
    home = m.node_home()
    mine = lambda: [p for p, cmd in job_processes(m.emulator) if f"/jobs/{job_id}" in marker(p)]  # noqa: E731
    assert wait_for(lambda: len(mine()) >= 6, timeout=20), job_processes(m.emulator)
    groups = {os.getpgid(p) for p in mine()}
    assert len(groups) == 2                                          # the job's group, and setsid's
    out = m.job("cancel", job_id, "--grace", "1").stdout
    assert "kdevops-gpu: cancelled" in out and "killed after the grace period" in out   # the TERM-ignoring one
    assert mine() == []
    st = m.status(job_id)
    assert st["status"] == "cancelled" and st["nodes"][0]["state"] == "cancelled"
    assert (home / ".kcloud" / "jobs" / job_id / "cancelled").exists()
    again = m.job("cancel", job_id)
    assert "already ended (cancelled)" in again.stdout


def marker(pid: int) -> str:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return ""
    return next((v.decode(errors="replace") for v in env if v.startswith(b"KCLOUD_JOB_DIR=")), "")


def test_bad_input_is_one_line_each(machine, tmp_path):
    m = machine
    src = tmp_path / "src"
    src.mkdir()
    (src / "run.sh").write_text("echo hello\n")
    before = [(i["id"], i["status"]) for i in m.instances()]

    # A setup that fails: status failed with the setup's output tail; the machine untouched.
    bad = m.job("submit", "--dir", str(src), "--setup", "echo compiling; echo 'no such package: torch' >&2; exit 3",
                "--", "bash run.sh", check=False)
    line = one_error(bad)
    job_id = bad.stdout.strip().splitlines()[-1]
    assert "setup exited 3 on kdevops-gpu" in line and "the machines are untouched" in line
    assert "no such package: torch" in bad.stdout
    st = m.job("status", job_id).stdout
    assert "failed (setup exit 3)" in st and "no such package: torch" in st
    assert [(i["id"], i["status"]) for i in m.instances()] == before

    # A second submit while one runs: allowed, its own id.
    a = m.submit("--dir", str(src), "--", "sleep 30")
    b = m.submit("--dir", str(src), "--", "sleep 30")
    assert a != b
    listing = m.job("list").stdout
    assert re.search(rf"^{a}\s+running", listing, re.M) and re.search(rf"^{b}\s+running", listing, re.M), listing

    # A missing artifacts path: named, one line.
    done = m.submit("--dir", str(src), "--artifacts", "out/model.bin", "--", "bash run.sh")
    m.wait_status(done)
    line = one_error(m.job("fetch", done, check=False))
    assert "'out/model.bin' does not exist on kdevops-gpu" in line

    # Logs of an unknown id, a malformed id, bad options: one line each, nothing sent.
    assert "no job zzzzzzzz in" in one_error(m.job("logs", "zzzzzzzz", check=False))
    assert "is not a job id" in one_error(m.make("job-logs", "ID=../../etc", check=False))
    assert "must be relative" in one_error(m.job("submit", "--artifacts", "/etc/passwd", "--", "true", check=False))
    assert "not an environment variable name" in one_error(m.job("submit", "--env", "1X=2", "--", "true", check=False))
    assert "needs a command" in one_error(m.make("job-submit", check=False))
    assert "job cancel needs a job id" in one_error(m.make("job-cancel", check=False))

    # A node that does not answer: one line naming it; nothing started.
    cfg = m.root / ".kcloud" / "ssh_config"
    saved = cfg.read_text()
    try:
        cfg.write_text(re.sub(r"Port \d+", "Port 9", saved))
        line = one_error(m.job("submit", "--dir", str(src), "--", "bash run.sh", check=False))
        assert "kdevops-gpu is unreachable" in line and "not started" in line, line
        line = one_error(m.job("status", a, check=False))
        assert "did not answer" in line
    finally:
        cfg.write_text(saved)
    for job_id in (a, b):
        m.job("cancel", job_id, "--grace", "1")


def test_the_job_environment_on_one_node(machine, tmp_path):
    """The per-node logic a cluster uses, on one node: ~/.kcloud/cluster.env sourced, --env on
    top, the job's own variables; --nodes 1 runs a single-node job."""
    m = machine
    src = tmp_path / "src"
    src.mkdir()
    job_id = m.submit("--dir", str(src), "--nodes", "1", "--env", "MSG=two words; $(not run)", "--artifacts",
                      "env.txt", "--", "env | grep -E '^(NNODES|NODE_RANK|MASTER_ADDR|MASTER_PORT|WORLD_SIZE|MSG|"
                      "KCLOUD_JOB_ID|KCLOUD_NODE)=' | sort > env.txt")
    m.wait_status(job_id)
    m.job("fetch", job_id)
    env = dict(line.split("=", 1) for line in (m.root / "artifacts" / job_id / "env.txt").read_text().splitlines())
    cluster = (m.node_home() / ".kcloud" / "cluster.env").read_text()
    assert env["NNODES"] == "1" and env["NODE_RANK"] == "0" and env["MASTER_PORT"] == "29500"
    assert f"MASTER_ADDR={env['MASTER_ADDR']}" in cluster
    assert env["MSG"] == "two words; $(not run)" and env["KCLOUD_JOB_ID"] == job_id
    assert env["KCLOUD_NODE"] == "kdevops-gpu"
    # A path no shell should parse, fetched as one name.
    odd = "odd name $(touch pwned) ;`touch pwned2`.txt"
    (src / "w.sh").write_text(f"echo weird > '{odd}'\n")
    job_id = m.submit("--dir", str(src), "--", "bash w.sh")
    m.wait_status(job_id)
    m.job("fetch", job_id, odd)
    assert (m.root / "artifacts" / job_id / odd).read_text() == "weird\n"
    assert not list(m.node_home().rglob("pwned*")) and not list(m.root.rglob("pwned*"))


def test_then_destroy_fetches_then_destroys_with_the_submitter_gone(tmp_path_factory, tmp_path):
    m = bring_up(tmp_path_factory, sets=["KCLOUD_DESTROY_AFTER_JOB=y"])
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "job.sh").write_text("for i in 1 2 3 4 5 6 7 8; do echo epoch $i; sleep 0.5; done\n"
                                    "mkdir -p out; head -c 100000 /dev/urandom > out/weights.bin\n")
        # THEN=keep opts one job out of CONFIG_KCLOUD_DESTROY_AFTER_JOB.
        kept = m.make("job-submit", f"DIR={src}", "THEN=keep", "CMD=true").stdout
        assert "Then destroy" not in kept
        m.wait_status(kept.strip().splitlines()[-1])
        assert "destroys the machines" not in m.make("status").stdout
        # The config's destroy; the submitter's whole process group is killed as soon as it is done.
        proc = subprocess.Popen(["make", "--no-print-directory", "job-submit", f"DIR={src}", "ARTIFACTS=out",
                                 "CMD=bash job.sh"], cwd=m.root, env=m.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, out + err
        assert processes_in_group(proc.pid) == []          # make, kcloud, ssh: all gone; the watchdog is not theirs
        job_id = out.strip().splitlines()[-1]
        assert "Then destroy (CONFIG_KCLOUD_DESTROY_AFTER_JOB=y)" in out
        weights = m.node_home() / ".kcloud" / "jobs" / job_id / "work" / "out" / "weights.bin"
        status = m.make("status").stdout
        assert f"destroys the machines after job {job_id}" in status, status
        assert wait_for(lambda: weights.exists(), timeout=30)
        blob = weights.read_bytes()
        assert wait_for(lambda: m.instances() == [], timeout=120), \
            (m.root / ".kcloud" / "watchdog.log").read_text()
        assert wait_for(lambda: audit(m.emulator) == CLEAN, timeout=60)
        assert (m.root / "artifacts" / job_id / "out" / "weights.bin").read_bytes() == blob
        log = (m.root / ".kcloud" / "watchdog.log").read_text()
        assert f"job {job_id} ended (succeeded): fetching out" in log and "destroying the machines" in log
        assert wait_for(lambda: "exiting" in (m.root / ".kcloud" / "watchdog.log").read_text(), timeout=30)
        # The record outlives the machines: status and logs still answer.
        st = m.status(job_id)
        assert st["status"] == "succeeded (exit 0)" and st["after"]["state"] == "done"
        assert m.job("logs", job_id).stdout == "".join(f"epoch {i}\n" for i in range(1, 9))
        assert "machines were destroyed" in m.job("status", job_id).stdout
    finally:
        tear_down(m)


def processes_in_group(pgid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(stat.parent.name))
    return out


def test_three_node_job_each_node_its_rank_and_cancel_everywhere(tmp_path_factory, tmp_path):
    if not re.search(r"^config KCLOUD_NODES$", (REPO / "kconfigs" / "Kconfig.cluster").read_text()
                     if (REPO / "kconfigs" / "Kconfig.cluster").exists() else "", re.M):
        pytest.skip("CONFIG_KCLOUD_NODES does not exist yet (issue 9)")
    m = bring_up(tmp_path_factory, A10_X3, sets=["KCLOUD_NODES=3"])
    try:
        names = ["kdevops-gpu-01", "kdevops-gpu-02", "kdevops-gpu-03"]
        assert sorted(i["name"] for i in m.instances()) == names
        src = tmp_path / "src"
        src.mkdir()
        (src / "who.sh").write_text('echo "$NODE_RANK $NNODES $MASTER_ADDR $WORLD_SIZE $KCLOUD_NODE" > rank.txt\n'
                                    'echo "rank $NODE_RANK up"\n')
        job_id = m.submit("--dir", str(src), "--artifacts", "rank.txt", "--", "bash who.sh")
        st = m.wait_status(job_id)
        assert st["status"] == "succeeded (exit 0)" and [n["name"] for n in st["nodes"]] == names
        m.job("fetch", job_id)
        seen = {n: (m.root / "artifacts" / job_id / n / "rank.txt").read_text().split() for n in names}
        assert [seen[n][0] for n in names] == ["0", "1", "2"]                     # its own rank each
        assert {seen[n][1] for n in names} == {"3"} and len({seen[n][2] for n in names}) == 1   # one master
        assert [seen[n][4] for n in names] == names
        private = {i["name"]: i.get("private_ip") or i["ip"] for i in m.instances()}
        assert seen["kdevops-gpu-02"][2] == private["kdevops-gpu-01"]
        logs = m.job("logs", job_id).stdout.splitlines()
        assert sorted(logs) == [f"[{n}] rank {r} up" for r, n in enumerate(names)]
        assert m.job("logs", job_id, "--node", "2").stdout == "rank 2 up\n"

        # Cancel ends every process on every node.
        (src / "long.sh").write_text("sleep 300 & setsid sleep 301 & sleep 302\n")
        job_id = m.submit("--dir", str(src), "--", "bash long.sh")
        per_node = lambda: {marker(p).split("/.kcloud/")[0] for p, _ in job_processes(m.emulator)  # noqa: E731
                            if marker(p).endswith(f"/jobs/{job_id}")}
        assert wait_for(lambda: len(per_node()) == 3, timeout=20)
        out = m.job("cancel", job_id, "--grace", "2").stdout
        assert all(f"{n}: cancelled" in out for n in names), out
        assert per_node() == set()
        st = m.status(job_id)
        assert st["status"] == "cancelled" and {n["state"] for n in st["nodes"]} == {"cancelled"}
    finally:
        tear_down(m)
