"""Real sshd hosts for the adapter tests (tests/sshd.py): three of them, on 127.0.0.2-4,
started once for the session and stopped at its end."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tests.sshd import Host, Hosts, Unavailable


@pytest.fixture(scope="session")
def ssh_hosts() -> list[Host]:
    hosts = Hosts(3)
    try:
        started = hosts.start()
    except Unavailable as e:
        pytest.skip(f"these tests need real sshd hosts, and there are none here: {e}")
    yield started
    hosts.stop()


@pytest.fixture
def ssh_host(ssh_hosts: list[Host]) -> Host:
    return ssh_hosts[0]


@pytest.fixture
def remote_folder(ssh_hosts: list[Host]) -> Path:
    """A fresh folder that the test and the hosts' account can both write in."""
    folder = Path(tempfile.mkdtemp(dir=ssh_hosts[0].shared))
    os.chmod(folder, 0o777)
    return folder
