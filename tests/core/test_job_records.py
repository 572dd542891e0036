"""kcloud job without a cloud: the records, the reading of the nodes, and the scripts a node runs
-- executed here with bash in a scratch HOME (the same scripts ssh feeds to a node), so the
runner, status, cancel and follow logic is tested in milliseconds. The make targets with
hostile values. End to end on the emulator: tests/e2e/test_jobs.py."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kcloud.bringup.project import Project
from kcloud.errors import ConfigError
from kcloud.jobs import core, nodes, records, remote

REPO = Path(__file__).resolve().parents[2]
KCLOUD = str(REPO / "scripts" / "kcloud")


# -- records -----------------------------------------------------------------------------------
def record(project, job_id, **kw):
    rec = {"id": job_id, "created": time.time(), "command": "true", "nodes": [{"name": "n1", "rank": 0}], **kw}
    with records.locked(project):
        records.save(project, rec)
    return rec


def test_ids_are_short_random_and_validated(tmp_path):
    p = Project(tmp_path)
    ids = {records.new_id(p) for _ in range(50)}
    assert len(ids) == 50 and all(records.ID.fullmatch(i) for i in ids)
    for bad in ("../x", "ABCDEFGH", "abc def", "a" * 9, ""):
        with pytest.raises(ConfigError):
            records.path_of(p, bad)


def test_resolve_by_id_prefix_latest_and_clear_errors(tmp_path):
    p = Project(tmp_path)
    with pytest.raises(ConfigError, match="no jobs in"):
        records.resolve(p, None)
    record(p, "abcd2345", created=1)
    record(p, "abce2345", created=2)
    assert records.resolve(p, None)["id"] == "abce2345"            # the latest
    assert records.resolve(p, "abcd")["id"] == "abcd2345"
    with pytest.raises(ConfigError, match="ambiguous: abcd2345, abce2345"):
        records.resolve(p, "abc")
    with pytest.raises(ConfigError, match="no job zzzzzzzz in"):
        records.resolve(p, "zzzzzzzz")
    with pytest.raises(ConfigError, match="no job ab in"):
        records.resolve(p, "ab")                                   # too short to be a prefix
    with pytest.raises(ConfigError, match="is not a job id"):
        records.resolve(p, "../../etc/passwd")


def test_a_damaged_record_is_named_and_skipped(tmp_path):
    p = Project(tmp_path)
    record(p, "good2345")
    d = records.jobs_dir(p)
    (d / "torn2345.json").write_text('{"id": "torn2345", "crea')
    (d / "lies2345.json").write_text(json.dumps({"id": "othr2345", "created": 1, "command": "x", "nodes": []}))
    (d / "type2345.json").write_text(json.dumps({"id": "type2345", "created": "x", "command": "x", "nodes": []}))
    (d / "link2345.json").symlink_to(d / "good2345.json")
    (d / "notes.txt").write_text("mine")
    found, notes = records.all_records(p)
    assert [r["id"] for r in found] == ["good2345"]
    text = "\n".join(notes)
    for name in ("torn2345.json (damaged: not JSON", "lies2345.json (damaged: it names another job",
                 "type2345.json (damaged: field 'created'", "link2345.json (damaged: a link", "notes.txt (not a job"):
        assert name in text, text
    with pytest.raises(ConfigError, match="record of job torn2345 is damaged"):
        records.load(p, "torn2345")


def test_cli_names_a_damaged_record_without_a_traceback(tmp_path):
    p = Project(tmp_path)
    record(p, "good2345", final={"status": "succeeded", "nodes": {"n1": {"state": "succeeded", "exit": 0}}})
    (records.jobs_dir(p) / "torn2345.json").write_bytes(b"\xff\xfe garbage")
    env = {**os.environ, "KCLOUD_PROJECT_DIR": str(tmp_path), "HOME": str(tmp_path / "home")}
    proc = subprocess.run([KCLOUD, "job", "list"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "good2345  succeeded (exit 0)" in proc.stdout
    assert "ignored" in proc.stderr and "torn2345.json (damaged: not JSON" in proc.stderr
    proc = subprocess.run([KCLOUD, "job", "logs", "torn2345"], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and proc.stderr.count("error:") == 1 and "damaged" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summarize():
    s = records.summarize
    assert s(["running", "succeeded"]) == "running"
    assert s(["setup", "starting"]) == "setting up"
    assert s(["succeeded", "succeeded"]) == "succeeded"
    assert s(["succeeded", "failed"]) == "failed"
    assert s(["lost"]) == "failed"
    assert s(["cancelled", "failed"]) == "cancelled"
    assert s([]) == "unknown"


def test_artifact_paths_stay_inside_the_job():
    assert core.check_relative("out/model.bin") == "out/model.bin"
    assert core.check_relative("./out//x/") == "out/x"
    for bad, why in (("/etc/passwd", "relative"), ("~/x", "relative"), ("../x", "leaves"), ("a/../../x", "leaves"),
                     ("a\nb", "control"), ("", "empty")):
        with pytest.raises(ConfigError, match=why):
            core.check_relative(bad)


# -- nodes -------------------------------------------------------------------------------------
SSH_CONFIG = "# Written by kcloud\n" + "".join(
    f"Host kdevops-gpu-0{i}\n  HostName 127.0.0.{i}\n  Port 2222\n" for i in (1, 2, 3))
INVENTORY = """[all]
kdevops-gpu-01 node_rank=0 private_ip=10.0.0.1
kdevops-gpu-03 node_rank=2 private_ip=10.0.0.3
kdevops-gpu-02 node_rank=1 private_ip=10.0.0.2

[gpu]
kdevops-gpu-01
kdevops-gpu-02
kdevops-gpu-03

[all:vars]
ansible_python_interpreter=/usr/bin/python3
"""


def project_with(tmp_path, ssh_config=None, inventory=None) -> Project:
    p = Project(tmp_path)
    p.state_dir.mkdir(parents=True, exist_ok=True)
    if ssh_config is not None:
        p.ssh_config.write_text(ssh_config)
    if inventory is not None:
        p.inventory.write_text(inventory)
    return p


def test_nodes_from_the_ssh_config_and_inventory(tmp_path):
    with pytest.raises(ConfigError, match="nothing is brought up in") as exc:
        nodes.read(project_with(tmp_path))
    assert exc.value.hint == "run make bringup first"
    got = nodes.read(project_with(tmp_path, SSH_CONFIG, INVENTORY))
    assert [(n.name, n.rank, n.private_ip) for n in got] == [
        ("kdevops-gpu-01", 0, "10.0.0.1"), ("kdevops-gpu-02", 1, "10.0.0.2"), ("kdevops-gpu-03", 2, "10.0.0.3")]


def test_a_single_node_inventory_of_an_older_bringup_is_rank_0(tmp_path):
    got = nodes.read(project_with(tmp_path, "Host kdevops-gpu\n  HostName 127.0.0.9\n", "[all]\nkdevops-gpu\n"))
    assert got == [nodes.Node("kdevops-gpu", 0, "")]
    got = nodes.read(project_with(tmp_path / "x", "Host kdevops-gpu\n  HostName 127.0.0.9\n"))
    assert got == [nodes.Node("kdevops-gpu", 0, "")]


@pytest.mark.parametrize("ssh_config, inventory, message", [
    ("Host -oProxyCommand=x\n", None, "is not one kcloud writes"),
    ("Host a;b\n", None, "is not one kcloud writes"),
    (SSH_CONFIG, "[all]\nkdevops-gpu-09\n", "names kdevops-gpu-09, which"),
    (SSH_CONFIG, "[all]\nkdevops-gpu-01 node_rank=x\n", "node_rank of kdevops-gpu-01"),
    (SSH_CONFIG, "[all]\nkdevops-gpu-01 private_ip=$(x)\n", "private_ip of kdevops-gpu-01"),
    (SSH_CONFIG, "[all]\nkdevops-gpu-01 node_rank=0\nkdevops-gpu-02 node_rank=0\n", "share a node_rank"),
    ("# nothing\n", None, "names no host"),
])
def test_hostile_or_inconsistent_host_files_are_one_clear_error(tmp_path, ssh_config, inventory, message):
    with pytest.raises(ConfigError, match=message):
        nodes.read(project_with(tmp_path, ssh_config, inventory))


def test_ssh_and_rsync_get_argv_lists(tmp_path):
    p = project_with(tmp_path / "dir with space", SSH_CONFIG)
    argv = nodes.ssh_argv(p, "kdevops-gpu-01")
    assert argv[:3] == ["ssh", "-F", str(p.ssh_config)] and argv[-2:] == ["kdevops-gpu-01", "bash -s"]
    shell = nodes.rsync_argv(p, "-a")[2]
    assert f"'{p.ssh_config}'" in shell and "BatchMode=yes" in shell
    with pytest.raises(ConfigError):
        nodes.ssh_argv(p, "-oProxyCommand=touch")


# -- the node side, run here with bash in a scratch HOME -----------------------------------------
class Node:
    def __init__(self, home: Path):
        self.home = home
        home.mkdir(parents=True, exist_ok=True)

    def sh(self, script: str, timeout=30) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-s"], input=script.encode(), capture_output=True, cwd=self.home,
                              env={"HOME": str(self.home), "PATH": os.environ["PATH"]}, timeout=timeout)

    def submit(self, job_id, command, setup="", env=(), cluster_env=None, single=False, rank=0, nnodes=1):
        if cluster_env is not None:
            (self.home / ".kcloud").mkdir(exist_ok=True)
            (self.home / ".kcloud" / "cluster.env").write_text(cluster_env)
        files = {"env.sh": remote.env_file(job_id=job_id, node="n1", rank=rank, nnodes=nnodes, master_addr="127.0.0.1",
                                           single=single, env=list(env)),
                 "run.sh": remote.RUNNER.format(base=remote.BASE, id=job_id), "command.sh": command + "\n"}
        if setup:
            files["setup.sh"] = setup + "\n"
        out = self.sh(remote.prepare_script(job_id, files))
        assert out.stdout.strip() == b"ok=1", out
        return self.sh(remote.start_script(job_id, bool(setup), heartbeat_s=0.2))

    def facts(self, job_id) -> dict:
        return nodes.parse_fields(self.sh(remote.status_script([job_id])).stdout.decode())

    def state(self, job_id) -> str:
        return core.node_status("n1", 0, self.facts(job_id)).state

    def wait(self, job_id, states=("succeeded", "failed", "cancelled"), timeout=20) -> core.NodeStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = core.node_status("n1", 0, self.facts(job_id))
            if s.state in states:
                return s
            time.sleep(0.1)
        raise AssertionError(self.facts(job_id))

    def dir(self, job_id) -> Path:
        return self.home / ".kcloud" / "jobs" / job_id


def processes_of(job_dir: Path) -> list[int]:
    mark = f"KCLOUD_JOB_DIR={job_dir}".encode()
    out = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0"):
                if (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    out.append(int(environ.parent.name))
        except (OSError, IndexError):
            continue
    return out


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "home")
    yield n
    for pid in processes_of(n.home / ".kcloud" / "jobs" / "x") + [
            p for d in (n.home / ".kcloud" / "jobs").glob("*") for p in processes_of(d)]:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


def test_a_job_runs_detached_and_records_how_it_ended(node):
    started = node.submit("jobaaaa1", "echo out; echo err >&2; exit 7")
    assert started.returncode == 0 and started.stdout.startswith(b"pid=")
    s = node.wait("jobaaaa1")
    assert (s.state, s.exit, s.why) == ("failed", 7, "exit 7") and "err" in s.tail
    d = node.dir("jobaaaa1")
    assert (d / "output.log").read_text() == "out\nerr\n"
    assert int((d / "pid").read_text()) > 1
    assert oct((d / "env.sh").stat().st_mode)[-3:] == "600"


def test_setup_runs_first_and_a_failing_setup_is_reported_with_its_tail(node):
    out = node.submit("jobsetu1", "cat ready", setup="echo compiling; echo ok > ready; echo line2")
    assert b"setup_exit=0" in out.stdout
    assert node.wait("jobsetu1").state == "succeeded"
    assert (node.dir("jobsetu1") / "output.log").read_text() == "ok\n"
    out = node.submit("jobsetu2", "touch ran", setup="echo step1; echo 'no such package' >&2; exit 3")
    facts = nodes.parse_fields(out.stdout.decode().splitlines()[-1])
    assert facts["setup_exit"] == "3" and "no such package" in remote.unb64(facts["tail"])
    s = node.wait("jobsetu2")
    assert (s.state, s.setup_exit, s.in_setup) == ("failed", 3, True) and "no such package" in s.tail
    assert not (node.dir("jobsetu2") / "work" / "ran").exists()       # the command never ran


def test_the_environment_order_defaults_cluster_env_single_node_then_env(node):
    cluster = "export MASTER_ADDR=10.0.0.1\nexport NNODES=3\nexport NODE_RANK=2\nexport NPROC_PER_NODE=8\n"
    hostile = "$(touch pwned) `touch pwned2` ' \" \\ \n next"
    node.submit("jobenva1", "env > env.txt", env=[("MSG", hostile), ("NODE_RANK", "5")], cluster_env=cluster)
    node.wait("jobenva1")
    env = dict(line.split("=", 1) for line in (node.dir("jobenva1") / "work" / "env.txt").read_text().split("\n")
               if "=" in line and not line.startswith(" "))
    assert env["MASTER_ADDR"] == "10.0.0.1" and env["NNODES"] == "3" and env["WORLD_SIZE"] == "24"
    assert env["NODE_RANK"] == "5"                                   # --env wins
    assert env["KCLOUD_JOB_ID"] == "jobenva1" and env["KCLOUD_JOB_DIR"] == str(node.dir("jobenva1"))
    text = (node.dir("jobenva1") / "work" / "env.txt").read_text()
    assert f"MSG={hostile}" in text
    assert not list(node.home.rglob("pwned*"))
    # --nodes 1 on a cluster: a single-node job.
    node.submit("jobenva2", "env > env.txt", cluster_env=cluster, single=True)
    node.wait("jobenva2")
    env = dict(l.split("=", 1) for l in (node.dir("jobenva2") / "work" / "env.txt").read_text().splitlines() if "=" in l)
    assert (env["NNODES"], env["NODE_RANK"], env["MASTER_ADDR"], env["WORLD_SIZE"]) == ("1", "0", "127.0.0.1", "8")
    # No cluster.env (an older bringup): the inventory's values.
    (node.home / ".kcloud" / "cluster.env").unlink()
    node.submit("jobenva3", "env > env.txt", rank=1, nnodes=2)
    node.wait("jobenva3")
    env = dict(l.split("=", 1) for l in (node.dir("jobenva3") / "work" / "env.txt").read_text().splitlines() if "=" in l)
    assert (env["NNODES"], env["NODE_RANK"], env["MASTER_PORT"], env["WORLD_SIZE"]) == ("2", "1", "29500", "2")


def test_cancel_kills_the_tree_even_what_left_the_group(node):
    node.submit("jobcanc1", "sleep 300 & (trap '' TERM; sleep 301) & setsid sleep 302 & sleep 303")
    d = node.dir("jobcanc1")
    deadline = time.monotonic() + 10
    while len(processes_of(d)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(processes_of(d)) >= 6 and len({os.getpgid(p) for p in processes_of(d)}) == 2
    t = time.monotonic()
    out = nodes.parse_fields(node.sh(remote.cancel_script("jobcanc1", 1)).stdout.decode())
    assert out["state"] == "cancelled" and out["forced"] == "1" and out["left"] == "0"
    assert time.monotonic() - t < 5
    assert processes_of(d) == []
    s = node.wait("jobcanc1")
    assert s.state == "cancelled" and s.exit is not None
    again = nodes.parse_fields(node.sh(remote.cancel_script("jobcanc1", 1)).stdout.decode().splitlines()[-1])
    assert again["state"] == "ended"


def test_a_cancel_during_setup_never_starts_the_command(node):
    files = {"env.sh": remote.env_file(job_id="jobcanc2", node="n1", rank=0, nnodes=1, master_addr="127.0.0.1",
                                       single=False, env=[]),
             "run.sh": remote.RUNNER.format(base=remote.BASE, id="jobcanc2"), "command.sh": "touch ran\n",
             "setup.sh": "sleep 30\n"}
    node.sh(remote.prepare_script("jobcanc2", files))
    node.sh(remote.start_script("jobcanc2", False))
    assert node.wait("jobcanc2", states=("setup",)).state == "setup"
    node.sh(remote.cancel_script("jobcanc2", 2))
    assert node.wait("jobcanc2").state == "cancelled"
    assert not (node.dir("jobcanc2") / "work" / "ran").exists()


def test_a_runner_killed_without_a_word_is_lost_not_running(node):
    node.submit("joblost1", "sleep 300")
    pid = int((node.dir("joblost1") / "pid").read_text())
    os.killpg(pid, 9)
    assert node.wait("joblost1", states=("lost",)).state == "lost"


def test_follow_streams_until_the_job_ends_and_never_repeats_a_byte(node):
    node.submit("jobfoll1", "for i in $(seq 1 30); do printf 'line %s\\n' $i; sleep 0.02; done; printf 'tail'")
    t = time.monotonic()
    out = node.sh(remote.logs_script("jobfoll1", "output", follow=True), timeout=30)
    assert out.returncode == 0 and time.monotonic() - t < 10
    assert out.stdout == b"".join(b"line %d\n" % i for i in range(1, 31)) + b"tail"
    assert node.sh(remote.logs_script("jobfoll1", "output", follow=False)).stdout == out.stdout
    assert node.sh(remote.logs_script("nosuchj1", "output", follow=True)).returncode == 44


def test_check_paths(node):
    node.submit("jobpath1", "mkdir -p out; echo x > out/a")
    node.wait("jobpath1")
    lines = node.sh(remote.check_paths_script("jobpath1", ["out/a", "out/b", "it's here"])).stdout.decode().split()
    got = [(k, remote.unb64(v)) for k, _, v in (l.partition("=") for l in lines)]
    assert got == [("present", "out/a"), ("missing", "out/b"), ("missing", "it's here")]


# -- the commands, nothing brought up; the make targets with hostile values ---------------------
@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    from kcloud.demo import scratch_project
    root = scratch_project(tmp_path_factory.mktemp("jobmake"))
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "KCLOUD_PROJECT_DIR")}
    env["HOME"] = str(root.parent / "home")

    def make(*args):
        return subprocess.run(["make", "--no-print-directory", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    return root, make


PWNED = "touch pwned"


@pytest.mark.parametrize("args, message", [
    (["job-submit", "CMD=python train.py"], "nothing is brought up in"),
    (["job-submit", f"CMD=echo; {PWNED}", f"DIR=$(shell {PWNED})"], "--dir $(shell touch pwned): not a directory"),
    (["job-submit", "CMD=x", f"ARTIFACTS=/abs `{PWNED}`"], "must be relative"),
    (["job-submit", "CMD=x", f"JOB_ENV=A=1 $$({PWNED})=2"], "not an environment variable name"),
    (["job-submit", "CMD=x", f"THEN=destroy;{PWNED}"], "invalid choice"),
    (["job-submit", "CMD=x", f"NODES=$(shell {PWNED})"], "invalid choice"),
    (["job-status", f"ID=x;{PWNED}"], "is not a job id"),
    (["job-logs", f"ID=$$({PWNED})", "FOLLOW=1"], "is not a job id"),
    (["job-logs", "ID=abc", f"NODE=`{PWNED}`"], "no job abc in"),
    (["job-fetch", "ID=abcdefgh", f"TO=$(shell {PWNED})"], "no job abcdefgh in"),
    (["job-cancel", f"ID=-rf {PWNED}"], "is not a job id"),
    (["job-cancel"], "job cancel needs a job id"),
    (["job-status"], "no jobs in"),
])
def test_make_job_targets_hostile_values_are_one_error_and_never_run(scratch, args, message):
    root, make = scratch
    proc = make(*args)
    errors = [l for l in proc.stderr.splitlines() if "error:" in l and not l.startswith("make: ***")]
    assert proc.returncode != 0 and len(errors) == 1 and message in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(root.rglob("pwned*")) and not list(Path.cwd().glob("pwned*"))


def test_list_with_no_jobs(scratch):
    _root, make = scratch
    proc = make("job-list")
    assert proc.returncode == 0 and "No jobs in" in proc.stdout


def test_destroy_after_job_is_a_setting(tmp_path):
    from kcloud.demo import scratch_project
    from kcloud.kconfig.config import load_settings
    root = scratch_project(tmp_path)
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    env.pop("KCLOUD_PROJECT_DIR", None)
    proc = subprocess.run([KCLOUD, "defconfig", "lambdalabs", "--set=KCLOUD_DESTROY_AFTER_JOB=y"], env=env,
                          cwd=root, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "CONFIG_KCLOUD_DESTROY_AFTER_JOB=y" in (root / ".config").read_text()
    assert load_settings(root / ".config").destroy_after_job is True


def test_a_node_is_the_same_machine_unless_the_journal_names_another():
    node = {"name": "kdevops-gpu", "rank": 0, "instance_id": "i-1"}
    assert core.same_machine(node, {"kdevops-gpu": {"id": "i-1"}})
    assert not core.same_machine(node, {"kdevops-gpu": {"id": "i-2"}})          # replaced
    assert core.same_machine(node, {})                                           # the journal cannot say
    assert core.same_machine({"name": "kdevops-gpu", "rank": 0}, {"kdevops-gpu": {"id": "i-2"}})


def test_then_destroy_is_pending_only_while_its_machines_run(tmp_path):
    from kcloud.jobs import after
    from kcloud.launch.journal import Journal
    p = project_with(tmp_path, "Host kdevops-gpu\n")
    journal = Journal(p.journal_path)
    journal.record({"event": "launched", "provider": "lambdalabs", "id": "i-1", "name": "kdevops-gpu",
                    "price_per_hour": 1.29})
    node = {"name": "kdevops-gpu", "rank": 0, "instance_id": "i-1"}
    record(p, "pend2345", then="destroy", after={"state": "pending"}, nodes=[node])
    record(p, "keep2345", then="", nodes=[node])
    record(p, "done2345", then="destroy", after={"state": "done"}, nodes=[node])
    record(p, "nost2345", then="destroy", state="not started", after={"state": "pending"}, nodes=[node])
    record(p, "gone2345", then="destroy", after={"state": "pending"}, nodes=[{**node, "instance_id": "i-0"}])
    assert [r["id"] for r in after.pending(p)] == ["pend2345"]
    assert after.status_words(p) == "destroys the machines after job pend2345"
    journal.record({"event": "terminated", "provider": "lambdalabs", "id": "i-1"})
    assert after.pending(p) == [] and after.tick(p, print) is False
