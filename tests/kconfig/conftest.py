"""Fixtures for the Kconfig tests: a scratch copy of the Kconfig tree, a CLI runner and a
network tripwire (no .config or .generated ever lands in the repo)."""
import socket
import subprocess

import pytest

from kconfig_helpers import copy_tree
from kcloud import providers


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("KCLOUD_SRCTREE", "KCONFIG_CONFIG", "srctree", "KCONFIG_WARN_UNDEF_ASSIGN"):
        monkeypatch.delenv(var, raising=False)
    for p in providers.names():
        monkeypatch.delenv(f"KCLOUD_{p.upper()}_FRAGMENTS", raising=False)


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A scratch copy of the tree, also the working directory (as under make)."""
    t = copy_tree(tmp_path / "tree")
    monkeypatch.chdir(t)
    return t


@pytest.fixture
def no_network(monkeypatch):
    """Any socket connection or subprocess (a $(shell ...)) fails the test loudly."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network or subprocess use during Kconfig evaluation: {args!r:.200}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(subprocess, "Popen", refuse)
    return attempts


@pytest.fixture
def run_cli(capsys):
    """kcloud CLI in process: returns (exit code, stdout, stderr)."""
    from kcloud.cli import main

    def run(*argv):
        code = main(list(argv))
        out = capsys.readouterr()
        return code, out.out, out.err
    return run
