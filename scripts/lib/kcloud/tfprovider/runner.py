"""Run terraform for one root (terraform/<provider>/) the kcloud way.

    tf = Terraform(project / "terraform" / "lambdalabs")
    tf.init()                                   # idempotent, quiet, offline
    tf.apply("terraform.tfvars", on_line=print) # streams terraform's lines
    tf.output()                                 # {"ip": "...", ...}
    tf.destroy()

Every run gets our own CLI configuration (TF_CLI_CONFIG_FILE; the user's ~/.terraformrc is
never read), TF_IN_AUTOMATION=1, TF_INPUT=0, -no-color and no checkpoint call. A non-zero
exit raises TerraformError carrying terraform's error diagnostics (summary + detail), not the
whole log. Ctrl-C is forwarded to terraform once (it asks the provider to stop, waits for
the in-flight call and saves state); after `stop_timeout` seconds terraform is terminated.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kcloud.errors import KcloudError
from kcloud.launch.inflight import die_with_parent
from kcloud.redact import redact
from kcloud.tfprovider import install, tfvars
from kcloud.tfprovider.install import terraform_binary  # noqa: F401  (re-exported for callers)

LineCallback = Callable[[str], None]
_STRIPPED_ENV = ("TF_CLI_CONFIG_FILE", "TERRAFORM_CONFIG", "TF_PLUGIN_CACHE_DIR", "TF_DATA_DIR", "TF_WORKSPACE",
                 "TF_INPUT", "TF_IN_AUTOMATION")
_BOX = re.compile(r"^[│╷╵]\s?")
# Placeholders so `destroy` works when terraform.tfvars is gone (destroy still evaluates the
# configuration; the values are never used to launch anything).
_DESTROY_PLACEHOLDERS = {"name": "kcloud-destroy", "candidates": '[{instance_type="none",region="none"}]',
                         "ssh_key_name": "kcloud-destroy", "ssh_public_key": "ssh-ed25519 placeholder"}


@dataclass(frozen=True)
class Diagnostic:
    severity: str          # "Error" or "Warning"
    summary: str
    detail: str

    def __str__(self) -> str:
        return f"{self.summary}\n{self.detail}" if self.detail else self.summary


class TerraformError(KcloudError):
    """terraform exited non-zero. `diagnostics` are its Error blocks; str() is the first summary."""

    def __init__(self, command: str, returncode: int, diagnostics: list[Diagnostic], tail: list[str]):
        self.command, self.returncode, self.diagnostics = command, returncode, diagnostics
        first = diagnostics[0].summary if diagnostics else (tail[-1] if tail else f"exit status {returncode}")
        more = f" (and {len(diagnostics) - 1} more errors)" if len(diagnostics) > 1 else ""
        super().__init__(f"terraform {command} failed: {first}{more}")

    @property
    def summaries(self) -> list[str]:
        return [d.summary for d in self.diagnostics]

    def details(self) -> str:
        return "\n".join(d.detail for d in self.diagnostics if d.detail)

    def report(self) -> str:
        """Every error with its detail (e.g. the failover table), for the user to read."""
        return "\n\n".join(f"Error: {d}" for d in self.diagnostics) or str(self)


def render_tfvars(root_dir: str | os.PathLike, **values) -> Path:
    """Write <root>/terraform.tfvars (see tfvars.render for the values) and return its path."""
    return tfvars.write(Path(root_dir) / "terraform.tfvars", **values)


def parse_diagnostics(lines: list[str], severity: str = "Error") -> list[Diagnostic]:
    """Pull terraform's diagnostic blocks out of its (-no-color) output.

    A block is `Error: <summary>`, a blank line, optional source context (`  on file line N`,
    `  with resource`, `  NN: code`), then the detail; newer versions frame it with │ ╷ ╵."""
    out: list[Diagnostic] = []
    current: list[str] | None = None
    summary = ""

    def close():
        if current is not None:
            out.append(Diagnostic(severity, summary, _detail(current)))

    for raw in lines:
        framed = raw.startswith(("│", "╷", "╵"))
        line = _BOX.sub("", raw.rstrip("\n"))
        if line.startswith(f"{severity}: "):
            close()
            summary, current = line[len(severity) + 2:].strip(), []
        elif current is not None:
            if raw.startswith("╵") or (not framed and re.match(r"^(Error|Warning): ", line)):
                close()
                current = None
            else:
                current.append(line)
    close()
    return out


def _detail(body: list[str]) -> str:
    """Drop the leading source context (`  with ...`, `  on ... line N`, `  NN: code`) and blanks."""
    lines = list(body)
    while lines and (not lines[0].strip() or re.match(r"^\s+(on |with |in |\d+: )", lines[0])):
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


class Terraform:
    def __init__(self, root_dir: str | os.PathLike, *, terraform_dir: str | os.PathLike | None = None,
                 binary: str | None = None, env: dict[str, str] | None = None, stop_timeout: float = 120.0,
                 python: str | None = None):
        self.root = Path(root_dir).resolve()
        # The directory holding .plugins/ and terraformrc: terraform/ (the roots' parent).
        self.terraform_dir = Path(terraform_dir).resolve() if terraform_dir else self.root.parent
        self.binary = binary or install.terraform_binary()
        self.extra_env = dict(env or {})
        self.stop_timeout = stop_timeout
        self.python = python
        self.cli_config = install.cli_config_path(self.terraform_dir)

    # -- environment ----------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV and not k.startswith("TF_CLI_ARGS")}
        env.update(TF_CLI_CONFIG_FILE=str(self.cli_config), TF_IN_AUTOMATION="1", TF_INPUT="0",
                   CHECKPOINT_DISABLE="1")
        env.update(self.extra_env)
        return env

    # -- commands -------------------------------------------------------------------
    def init(self, *, force: bool = False) -> bool:
        """Install the plugin and CLI config, then `terraform init` unless nothing changed
        since the last successful one. Returns True when init ran. Never contacts a registry."""
        inst = install.install(self.terraform_dir, python=self.python)
        stamp_file = self.root / ".terraform" / "kcloud-init.sha256"
        stamp = self._init_stamp(inst)
        if not force and stamp_file.exists() and stamp_file.read_text() == stamp:
            return False
        # The lock file pins the plugin's checksum; ours changes with the venv path, and it
        # is the only provider here, so a stale lock is simply dropped (it is git-ignored).
        (self.root / ".terraform.lock.hcl").unlink(missing_ok=True)
        self._run("init", ["init", "-input=false", "-no-color", "-backend=true", "-get=true"], None)
        stamp_file.parent.mkdir(parents=True, exist_ok=True)
        stamp_file.write_text(stamp)
        return True

    def apply(self, vars_file: str | os.PathLike | None = None, on_line: LineCallback | None = None) -> None:
        self.init()
        self._run("apply", ["apply", "-auto-approve", "-input=false", "-no-color", *self._var_args(vars_file)],
                  on_line)

    def plan(self, vars_file: str | os.PathLike | None = None, on_line: LineCallback | None = None) -> bool:
        """True when applying would change something."""
        self.init()
        code = self._run("plan", ["plan", "-input=false", "-no-color", "-detailed-exitcode",
                                  *self._var_args(vars_file)], on_line, ok=(0, 2))
        return code == 2

    def destroy(self, vars_file: str | os.PathLike | None = None, on_line: LineCallback | None = None) -> None:
        self.init()
        args = self._var_args(vars_file)
        if not args and not (self.root / "terraform.tfvars").exists():
            args = [f"-var={k}={v}" for k, v in _DESTROY_PLACEHOLDERS.items()]
        self._run("destroy", ["destroy", "-auto-approve", "-input=false", "-no-color", *args], on_line)

    def output(self) -> dict:
        if not (self.root / ".terraform").exists():
            return {}
        lines: list[str] = []
        self._run("output", ["output", "-json", "-no-color"], lines.append)
        text = "\n".join(lines).strip() or "{}"
        return {k: v.get("value") for k, v in json.loads(text).items()}

    def state_list(self) -> list[str]:
        if not (self.root / "terraform.tfstate").exists():
            return []
        lines: list[str] = []
        self._run("state list", ["state", "list", "-no-color"], lines.append)
        return [line.strip() for line in lines if line.strip()]

    # -- internals ------------------------------------------------------------------
    def _var_args(self, vars_file) -> list[str]:
        return [f"-var-file={Path(vars_file).resolve()}"] if vars_file else []

    def _init_stamp(self, inst: install.Installation) -> str:
        h = hashlib.sha256()
        h.update(self.binary.encode())
        for path in [inst.plugin, inst.cli_config, *sorted(self.root.glob("*.tf")),
                     *sorted((self.terraform_dir / "modules").rglob("*.tf"))]:
            h.update(str(path).encode())
            h.update(path.read_bytes() if path.exists() else b"")
        return h.hexdigest()

    def _run(self, command: str, args: list[str], on_line: LineCallback | None, ok: tuple[int, ...] = (0,)) -> int:
        proc = subprocess.Popen([self.binary, *args], cwd=self.root, env=self.environment(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", bufsize=1, start_new_session=True,
                                preexec_fn=die_with_parent)
        lines: queue.Queue = queue.Queue()
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        seen: list[str] = []
        interrupted_at: float | None = None
        terminated_at: float | None = None
        done = False
        while not done:
            try:
                try:
                    line = lines.get(timeout=0.2)
                except queue.Empty:
                    if interrupted_at is not None:
                        terminated_at = self._escalate(proc, interrupted_at, terminated_at, on_line)
                    continue
                if line is None:
                    done = True
                    continue
                line = redact(line.rstrip("\n"))
                seen.append(line)
                _say(on_line, line)     # a failing callback must not orphan a running apply
            except KeyboardInterrupt:
                if interrupted_at is None:
                    interrupted_at = time.monotonic()
                    # To the whole group, as a terminal's Ctrl-C would: terraform <= 1.0 runs
                    # itself under panicwrap, whose parent ignores SIGINT; plugins ignore it too.
                    _signal(proc, signal.SIGINT, group=True)
                    _say(on_line, f"kcloud: interrupted; terraform is finishing the in-flight call and saving "
                                  f"its state (at most {self.stop_timeout:.0f} s)")
                else:
                    _say(on_line, "kcloud: still waiting for terraform to save its state")
        code = proc.wait()
        reader.join(timeout=1)
        if interrupted_at is not None:
            raise KeyboardInterrupt
        if code not in ok:
            diags = parse_diagnostics(seen)
            raise TerraformError(command, code, diags, [s for s in seen if s.strip()][-5:])
        return code

    def _escalate(self, proc: subprocess.Popen, interrupted_at: float, terminated_at: float | None,
                  on_line: LineCallback | None) -> float | None:
        now = time.monotonic()
        if terminated_at is None and now - interrupted_at > self.stop_timeout:
            _say(on_line, f"kcloud: terraform did not stop within {self.stop_timeout:.0f} s; terminating it "
                          "(make destroy finds anything it launched through the journal)")
            _signal(proc, signal.SIGTERM, group=False)
            return now
        if terminated_at is not None and now - terminated_at > 10:
            _signal(proc, signal.SIGKILL, group=True)
        return terminated_at


def _pump(stream, lines: queue.Queue) -> None:
    try:
        for line in stream:
            lines.put(line)
    finally:
        lines.put(None)


def _signal(proc: subprocess.Popen, sig: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _say(on_line: LineCallback | None, text: str) -> None:
    if on_line is not None:
        try:
            on_line(text)
        except Exception:
            pass
