"""Where one project directory keeps its things, and how it names what it creates remotely.

Local files are derived from the directory's absolute path; what kcloud creates remotely is
named and tagged with the directory's *identity*, a random id created once and kept in
`.kcloud/id` (and in the SSH key's comment), so two checkouts -- or the same path on two
computers -- never share a key, a tag or a machine (seed 004, "Using Multiple kdevops
Directories").
"""
from __future__ import annotations

import fcntl
import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kcloud.errors import ConfigError



@dataclass(frozen=True)
class Project:
    root: Path

    @classmethod
    def here(cls) -> "Project":
        return cls(Path(os.environ.get("KCLOUD_PROJECT_DIR", os.getcwd())).resolve())

    @property
    def hash(self) -> str:
        return hashlib.sha256(str(self.root).encode()).hexdigest()[:8]

    @property
    def id_path(self) -> Path:
        return self.state_dir / "id"

    def identity(self, create: bool = False) -> str | None:
        """This directory's random id (kcloud.kconfig.identity.directory_id): `.kcloud/id`, else
        recovered from our public key's comment, else a new one when `create`."""
        from kcloud.kconfig.identity import directory_id
        return directory_id(self.root, create=create)

    def unique_key_name(self, provider: str, create: bool = True) -> str | None:
        """Our unique key's name on `provider` (None without an identity and not `create`)."""
        from kcloud.kconfig.identity import unique_key_name
        ident = self.identity(create=create)
        return unique_key_name(provider, self.root, ident) if ident else None

    def known_key_name(self, provider: str = "lambdalabs") -> str | None:
        return self.unique_key_name(provider, create=False)

    def known_key_names(self) -> set[str]:
        """Our unique key's name on every provider, if this directory has an identity."""
        from kcloud import providers
        return {n for p in providers.names() if (n := self.unique_key_name(p, create=False))}

    @property
    def launching_lock(self) -> Path:
        """Held shared by every process that may launch (bringup, terraform's plugin); destroy
        takes it exclusively, so it never reports success while a launch is in flight."""
        return self.state_dir / "launching.lock"

    @property
    def private_key(self) -> Path:
        """kdevops' default key pair: ~/.ssh/kdevops_terraform_<sha256("<dir>\\n")[:8]>."""
        from kcloud.kconfig.identity import topdir_sha256
        return Path(os.path.expanduser(f"~/.ssh/kdevops_terraform_{topdir_sha256(self.root)[:8]}"))

    @property
    def state_dir(self) -> Path:
        return self.root / ".kcloud"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "journal.jsonl"

    @property
    def progress_path(self) -> Path:
        return self.state_dir / "progress.log"

    @property
    def ssh_config(self) -> Path:
        return self.state_dir / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def inventory(self) -> Path:
        return self.root / "hosts"

    def terraform_dir(self, provider: str) -> Path:
        return self.root / "terraform" / provider

    @contextmanager
    def lock(self, what: str):
        """One bringup/destroy at a time per directory (two would race on state and keys).

        Nothing in .kcloud/ is followed through a planted link (policy in kcloud.fsutil): a
        symlinked .kcloud/, lock or journal is refused with one line; with the lock held, a
        link at a file kcloud regenerates (progress.log, ssh_config, known_hosts, hosts) is
        removed so that nothing later writes through it."""
        import stat

        from kcloud import fsutil
        if self.state_dir.is_symlink():
            raise ConfigError(f"{self.state_dir} is a symbolic link; refusing to keep kcloud state through it",
                              hint=f"remove it (rm {self.state_dir}); kcloud creates the directory")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = fsutil.open_nofollow(self.state_dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(fd, "r+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                raise ConfigError(f"another kcloud command is running in {self.root} ({f.read().strip()})",
                                  hint="wait for it to finish") from None
            try:
                os.close(fsutil.open_nofollow(self.journal_path, os.O_RDONLY))   # refuses a planted link
            except FileNotFoundError:
                pass
            for regenerated in (self.progress_path, self.ssh_config, self.known_hosts, self.inventory):
                try:
                    st = regenerated.lstat()
                except FileNotFoundError:
                    continue
                if stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
                    regenerated.unlink()
            f.seek(0)
            f.truncate()
            f.write(f"{what}, pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
