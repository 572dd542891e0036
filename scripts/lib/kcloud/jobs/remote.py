"""The shell run on a node: scripts sent to `bash -s` over SSH, and the files a job keeps there.

Every value that comes from the user or this computer reaches these scripts through
shlex.quote (or base64 for file contents), never by pasting. Scripts answer with one
`key=value ...` line per fact (values base64 or without spaces); exit codes below 255, which
is ssh's own. Paths are under "$HOME", which is the node's (on kcloud's emulator each instance
has its own HOME; nothing assumes /home/ubuntu).

The job runs as `setsid -f env KCLOUD_JOB_DIR=... nohup bash run.sh`: its own session and
process group (no SIGHUP when the SSH connection drops), stdin from /dev/null, output to files.
KCLOUD_JOB_DIR in its environment, inherited by everything it starts, is how cancel also
finds a process that left the group (setsid, a daemon).
"""
from __future__ import annotations

import base64
import shlex

BASE = ".kcloud/jobs"          # under the node's HOME
TAIL_BYTES = 4000


def q(value) -> str:
    return shlex.quote(str(value))


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def unb64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode(errors="replace")
    except ValueError:
        return ""


def job_dir(job_id: str) -> str:
    """The job's directory as the remote shell spells it (HOME expanded there)."""
    return f'"$HOME"/{BASE}/{job_id}'


PROLOGUE = """\
set -u
cd || {{ echo "error=no-home"; exit 90; }}
J="$HOME"/{base}/{id}
"""


def env_file(*, job_id: str, node: str, rank: int, nnodes: int, master_addr: str, single: bool,
             env: list[tuple[str, str]]) -> str:
    """env.sh: defaults from the inventory, then ~/.kcloud/cluster.env (bringup's, when the
    node has it), then the single-node override of `--nodes 1` on a cluster, then --env."""
    lines = [f"# kcloud job {job_id} on {node}: the job's environment (sourced by run.sh; do not edit)",
             f"export NNODES={nnodes} NODE_RANK={rank} MASTER_ADDR={q(master_addr)} MASTER_PORT=29500",
             "export NPROC_PER_NODE=1",
             'if [ -r "$HOME/.kcloud/cluster.env" ]; then . "$HOME/.kcloud/cluster.env"; fi']
    if single:
        lines.append("export NNODES=1 NODE_RANK=0 MASTER_ADDR=127.0.0.1")
    lines.append('export WORLD_SIZE=$(( NNODES * ${NPROC_PER_NODE:-1} ))')
    lines += [f"export {key}={q(value)}" for key, value in env]
    lines.append(f'export KCLOUD_JOB_ID={job_id} KCLOUD_NODE={q(node)} KCLOUD_JOB_DIR="$HOME"/{BASE}/{job_id}')
    return "\n".join(lines) + "\n"


RUNNER = """\
#!/bin/bash
# kcloud job {id}: started detached by `kcloud job submit` (do not edit). Its own session and
# process group; writes pid, phase, started, setup_exit, ended and exit_code next to it.
J="$HOME"/{base}/{id}
cd "$J" || exit 1
echo $$ > "$J/pid.tmp" && mv -f "$J/pid.tmp" "$J/pid"
trap '' HUP
# A cancel (TERM to the group) ends the command; the runner stays to record how it ended.
trap 'echo "kcloud: job {id} got a termination signal" >&2' TERM INT
finish() {{
    date +%s > "$J/ended.tmp" && mv -f "$J/ended.tmp" "$J/ended"
    echo "$1" > "$J/exit_code.tmp" && mv -f "$J/exit_code.tmp" "$J/exit_code"
    exit 0
}}
. "$J/env.sh" || finish 126
cd "$J/work" || finish 126
[ -e "$J/cancelled" ] && finish 143
if [ -e "$J/setup.sh" ]; then
    echo setup > "$J/phase"
    bash "$J/setup.sh" > "$J/setup.log" 2>&1 < /dev/null
    rc=$?
    echo "$rc" > "$J/setup_exit"
    [ "$rc" = 0 ] || finish "$rc"
fi
[ -e "$J/cancelled" ] && finish 143
date +%s > "$J/started"
echo running > "$J/phase"
bash "$J/command.sh" < /dev/null
finish $?
"""


def prepare_script(job_id: str, files: dict[str, str]) -> str:
    """Make the job's directory and write its files; check the tools the job needs."""
    writes = "\n".join(f"printf %s {q(b64(text))} | base64 -d > \"$J\"/{name} || exit 7"
                       for name, text in files.items())
    return PROLOGUE.format(base=BASE, id=job_id) + f"""\
umask 077
missing=""
for tool in bash setsid nohup tail base64 rsync; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing,$tool"
done
if [ -n "$missing" ]; then echo "missing=${{missing#,}}"; exit 4; fi
if [ -e "$J" ]; then echo "exists=1"; exit 5; fi
mkdir -p "$J/work" || exit 6
date +%s > "$J/submitted"
{writes}
: > "$J/output.log"
echo "ok=1"
"""


def start_script(job_id: str, wait_setup: bool, heartbeat_s: float = 30) -> str:
    """Start the runner detached; answer `pid=`; with a setup, wait for it in this session
    (the job does not depend on it: a dropped connection only ends the waiting), printing
    `progress=` every heartbeat and `setup_exit=` (with `tail=` when it failed)."""
    wait = f"""\
n=0
while [ ! -e "$J/started" ] && [ ! -e "$J/exit_code" ]; do
    sleep 0.2
    n=$((n + 1))
    if [ $((n % {max(1, int(heartbeat_s * 5))})) = 0 ]; then
        echo "progress=$(tail -n 1 "$J/setup.log" 2>/dev/null | head -c 300 | base64 -w0)"
    fi
done
rc=$(cat "$J/setup_exit" 2>/dev/null || cat "$J/exit_code" 2>/dev/null || echo 0)
if [ -e "$J/cancelled" ]; then echo "setup_exit=$rc cancelled=1"; exit 0; fi
if [ "$rc" != 0 ]; then
    log="$J/setup.log"; [ -e "$J/setup_exit" ] || log="$J/output.log"
    echo "setup_exit=$rc tail=$(tail -c {TAIL_BYTES} "$log" 2>/dev/null | base64 -w0)"
else
    echo "setup_exit=0"
fi
""" if wait_setup else ""
    return PROLOGUE.format(base=BASE, id=job_id) + f"""\
cd "$J" || {{ echo "error=no-job-dir"; exit 5; }}
setsid -f env KCLOUD_JOB_DIR="$J" nohup bash "$J/run.sh" < /dev/null >> "$J/output.log" 2>&1 || exit 8
i=0
while [ ! -s "$J/pid" ]; do
    sleep 0.05
    i=$((i + 1))
    if [ $i -gt 400 ]; then echo "error=no-pid"; exit 9; fi
done
echo "pid=$(cat "$J/pid")"
{wait}"""


# The facts of one job on this node: one answer line. `alive`: the pid in `pid` is the
# runner of *this* job (its environment carries KCLOUD_JOB_DIR), not a recycled pid.
STATUS_FN = """\
# Only processes that still run: a zombie (killed, not yet reaped by its new parent) is done.
running() {
    local n s
    while read -r n; do
        { read -r s < "/proc/$n/stat"; } 2>/dev/null || continue
        s=${s##*) }
        case "$s" in Z*|X*) continue ;; esac
        echo "$n"
    done
}
alive() {
    local pid=$1
    [ -n "$pid" ] && { tr '\\0' '\\n' < "/proc/$pid/environ"; } 2>/dev/null | grep -qxF "KCLOUD_JOB_DIR=$J"
}
facts() {
    local id=$1
    J="$HOME"/%(base)s/$id
    if [ ! -d "$J" ]; then echo "id=$id state=unknown"; return; fi
    local pid phase code sx st en ca state tail sub
    pid=$(cat "$J/pid" 2>/dev/null); phase=$(cat "$J/phase" 2>/dev/null); sub=$(cat "$J/submitted" 2>/dev/null)
    code=$(cat "$J/exit_code" 2>/dev/null); sx=$(cat "$J/setup_exit" 2>/dev/null)
    st=$(cat "$J/started" 2>/dev/null); en=$(cat "$J/ended" 2>/dev/null)
    ca=0; [ -e "$J/cancelled" ] && ca=1
    tail=""
    if [ -n "$code" ]; then
        state=ended
        if [ "$ca" = 0 ] && [ "$code" != 0 ]; then
            if [ -n "$sx" ] && [ "$sx" != 0 ]; then
                tail=$(tail -c %(tail)d "$J/setup.log" 2>/dev/null | base64 -w0)
            else
                tail=$(tail -c %(tail)d "$J/output.log" 2>/dev/null | base64 -w0)
            fi
        fi
    elif alive "$pid"; then
        state=${phase:-starting}
    elif [ -z "$pid" ]; then
        state=starting
    else
        state=lost
    fi
    echo "id=$id state=$state pid=${pid:-} exit=${code:-} setup_exit=${sx:-} cancelled=$ca submitted=${sub:-} started=${st:-} ended=${en:-} now=$(date +%%s) tail=$tail"
}
""" % {"base": BASE, "tail": TAIL_BYTES}


def status_script(job_ids: list[str]) -> str:
    return "set -u\ncd || { echo \"error=no-home\"; exit 90; }\n" + STATUS_FN + \
        "".join(f"facts {q(i)}\n" for i in job_ids)


def cancel_script(job_id: str, grace: float) -> str:
    """TERM to the job's process group and every process carrying its KCLOUD_JOB_DIR; KILL
    what is left after `grace` seconds; then the job's exit is recorded if the runner could
    not. Answers `state=cancelled killed=N forced=0|1` (or `state=ended` / `state=unknown`)."""
    ticks = max(1, int(grace * 5))
    return PROLOGUE.format(base=BASE, id=job_id) + STATUS_FN + f"""\
if [ ! -d "$J" ]; then echo "state=unknown"; exit 0; fi
if [ -e "$J/exit_code" ]; then facts {q(job_id)}; exit 0; fi
date +%s > "$J/cancelled"
pg=$(cat "$J/pid" 2>/dev/null)
# The job's processes: its process group (pgrep; without procps, builtin reads of
# /proc/N/stat) and whatever carries its KCLOUD_JOB_DIR (one grep over every environment).
members() {{
    local p n s
    {{
        if [ -n "$pg" ] && command -v pgrep >/dev/null 2>&1; then
            pgrep -g "$pg"
        elif [ -n "$pg" ]; then
            for p in /proc/[0-9]*/stat; do
                n=${{p#/proc/}}; n=${{n%/stat}}
                [ "$n" = "$$" ] && continue
                {{ read -r s < "$p"; }} 2>/dev/null || continue
                s=${{s##*) }}
                set -- $s
                [ "$3" = "$pg" ] && echo "$n"
            done
        fi
        grep -lzxF "KCLOUD_JOB_DIR=$J" /proc/[0-9]*/environ 2>/dev/null | sed 's#^/proc/##; s#/environ$##'
    }} | sort -un | running
}}
victims=$(members)
count=$(echo $victims | wc -w)
[ -n "$victims" ] && kill -TERM $victims 2>/dev/null
forced=0
i=0
while [ -n "$(members)" ]; do
    i=$((i + 1))
    if [ $i -ge {ticks} ]; then
        forced=1
        kill -KILL $(members) 2>/dev/null
        j=0
        while [ -n "$(members)" ] && [ $j -lt 25 ]; do sleep 0.2; j=$((j + 1)); done
        break
    fi
    sleep 0.2
done
# The runner records the exit when it outlives the command; a killed runner cannot.
k=0
while [ ! -e "$J/exit_code" ] && [ $k -lt 10 ] && alive "$pg"; do sleep 0.1; k=$((k + 1)); done
if [ ! -e "$J/exit_code" ]; then
    date +%s > "$J/ended.tmp" && mv -f "$J/ended.tmp" "$J/ended"
    echo 137 > "$J/exit_code.tmp" && mv -f "$J/exit_code.tmp" "$J/exit_code"
fi
left=$(members | wc -w)
echo "state=cancelled killed=$count forced=$forced left=$left"
"""


def logs_script(job_id: str, which: str, follow: bool) -> str:
    """cat the log, or follow it until the runner ends (GNU tail --pid reads what is left)."""
    log = "setup.log" if which == "setup" else "output.log"
    # Follow: print what is new every 0.2 s, up to the size seen (never a byte twice); the end
    # is decided before the last read, so what the job wrote before it ended is all printed.
    follow_part = f"""\
pid=$(cat "$J/pid" 2>/dev/null)
f="$J"/{log}
off=0
while :; do
    last=0
    if [ -e "$J/exit_code" ] || ! alive "$pid"; then last=1; fi
    size=$(stat -c %s "$f" 2>/dev/null || echo 0)
    if [ "$size" -gt "$off" ]; then
        tail -c +$((off + 1)) "$f" | head -c $((size - off))
        off=$size
    fi
    [ $last = 1 ] && exit 0
    sleep 0.2
done
""" if follow else ""
    return PROLOGUE.format(base=BASE, id=job_id) + STATUS_FN + f"""\
if [ ! -d "$J" ]; then echo "kcloud: job {job_id} is unknown on this node" >&2; exit 44; fi
{follow_part}[ -e "$J"/{log} ] || exit 0
exec cat "$J"/{log}
"""


def check_paths_script(job_id: str, paths: list[str]) -> str:
    """Which artifact paths exist under the job's work directory: `present=<b64>` or `missing=<b64>`."""
    checks = "\n".join(
        f'if [ -e "$J"/work/{q(p)} ] || [ -L "$J"/work/{q(p)} ]; then echo "present={b64(p)}"; '
        f'else echo "missing={b64(p)}"; fi' for p in paths)
    return PROLOGUE.format(base=BASE, id=job_id) + f"""\
if [ ! -d "$J" ]; then echo "state=unknown"; exit 0; fi
{checks}
"""
