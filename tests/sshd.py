"""Real SSH hosts for the tests and the benchmark: sshd instances on loopback addresses
(127.0.0.2, 127.0.0.3, ...), each with its own generated host key, a free port and a
config of its own; one generated client key authorized for a plain test account; and a
known_hosts file the client checks their host keys against. Nothing listens beyond
loopback and no traffic leaves it.

The account is `abreast-test` (login shell /bin/sh, which reads no profile when it
runs a command) when the tests run as root (it is created if missing); otherwise the
current user, for whom an unprivileged sshd can still authenticate.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
ACCOUNT = "abreast-test"


class Unavailable(Exception):
    """sshd cannot be installed or started here: the tests that need it say so."""


def ensure_sshd() -> str:
    """The sshd binary, installed with apt-get when missing and we may (root)."""
    found = shutil.which("sshd") or (SSHD if os.path.exists(SSHD) else None)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("sshd is not installed (apt-get install openssh-server; .ci/run does it)")
    for command in (["apt-get", "install", "-y", "openssh-server"], ["apt-get", "update"], ["apt-get", "install", "-y", "openssh-server"]):
        subprocess.run(command, capture_output=True, timeout=600, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if os.path.exists(SSHD):
            return SSHD
    raise Unavailable("sshd is not installed and apt-get could not install openssh-server")


def account() -> pwd.struct_passwd:
    """The plain account the hosts let in: abreast-test as root (created if missing)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.getuid())
    try:
        pwd.getpwnam(ACCOUNT)
    except KeyError:
        p = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", ACCOUNT], capture_output=True, text=True)
        if p.returncode != 0:
            raise Unavailable(f"cannot create the test account {ACCOUNT}: {p.stderr.strip()}") from None
    # useradd leaves the password locked ('!'), and sshd without PAM refuses a locked
    # account even for a key: no password at all ('*') lets keys in.
    subprocess.run(["usermod", "--password", "*", ACCOUNT], capture_output=True, check=True)
    return pwd.getpwnam(ACCOUNT)


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return (path.parent / (path.name + ".pub")).read_text().strip()


@dataclass
class Host:
    """One sshd on its own loopback address."""

    address: str
    port: int
    folder: Path
    user: str
    identity_file: str
    known_hosts: str
    shared: Path = Path("/nonexistent")  # a folder the tests and the account both write (1777)
    process: subprocess.Popen | None = None
    host_key: str = ""

    def target(self, name: str, roles: list[str] | None = None, **fields: object) -> dict:
        """A scenario target that reaches this host with the `ssh` adapter."""
        doc: dict = {"name": name, "roles": roles or ["app"], "adapter": "ssh", "host": self.address, "port": self.port,
                     "user": self.user, "identity_file": self.identity_file, "ssh_options": self.options()}
        doc.update(fields)
        return doc

    def options(self) -> dict[str, str]:
        return {"UserKnownHostsFile": self.known_hosts, "GlobalKnownHostsFile": "/dev/null",
                "StrictHostKeyChecking": "yes", "IdentitiesOnly": "yes"}

    def ssh(self, *command: str) -> list[str]:
        """argv of a plain ssh to this host (its own connection)."""
        argv = ["ssh", "-T", "-o", "BatchMode=yes", "-p", str(self.port), "-l", self.user, "-i", self.identity_file]
        for k, v in self.options().items():
            argv += ["-o", f"{k}={v}"]
        return [*argv, "--", self.address, *command]

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def connections(self) -> list[int]:
        """The sshd processes serving this host's connections, one per connection (the
        listener's children: the privileged monitor of each)."""
        return _children(self.pid)

    def connection_processes(self) -> list[int]:
        """Every sshd process of every connection: the monitors and the unprivileged
        children that hold the TCP connections (killing those drops them)."""
        monitors = self.connections()
        return [child for pid in monitors for child in _children(pid) if _name(child).startswith("sshd")] + monitors

    def drop_connections(self) -> None:
        """Kill the sshd processes that serve this host's connections: the TCP
        connections drop, as when a network goes away (the listener stays)."""
        for pid in self.connection_processes():
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass  # a monitor ends when its child does

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _children(parent: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            out.append(int(name))
    return out


def _name(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Hosts:
    """`count` hosts on 127.0.0.2, 127.0.0.3, ...; `stop()` ends them."""

    count: int
    folder: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="abreast-sshd-")))
    hosts: list[Host] = field(default_factory=list)

    def start(self) -> list[Host]:
        sshd = ensure_sshd()
        who = account()
        if who.pw_name == ACCOUNT:
            # The test account's attempt records from an earlier test run (deployment ids
            # like `r1` repeat from run to run): each run starts from a clean host.
            shutil.rmtree(Path(who.pw_dir) / ".abreast", ignore_errors=True)
        # sshd reads authorized_keys as the account, and the account's commands write in
        # the shared folder: it must be able to reach them.
        os.chmod(self.folder, 0o755)
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
        client = self.folder / "client_key"
        authorized = self.folder / "authorized_keys"
        authorized.write_text(keygen(client, "abreast-test-client") + "\n")
        os.chmod(authorized, 0o644)
        shared = self.folder / "shared"
        shared.mkdir(mode=0o777)
        os.chmod(shared, 0o1777)
        known = self.folder / "known_hosts"
        lines = []
        try:
            for i in range(self.count):
                address = f"127.0.0.{i + 2}"
                home = self.folder / f"host{i + 1}"
                home.mkdir()
                host_key = keygen(home / "host_key", f"host{i + 1}")
                port = free_port(address)
                host = Host(address, port, home, who.pw_name, str(client), str(known), shared=shared, host_key=host_key)
                config = home / "sshd_config"
                config.write_text(
                    f"ListenAddress {address}:{port}\n"
                    f"HostKey {home / 'host_key'}\n"
                    f"PidFile {home / 'sshd.pid'}\n"
                    f"AuthorizedKeysFile {authorized}\n"
                    f"AllowUsers {who.pw_name}\n"
                    "UsePAM no\nStrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                    "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\n"
                    "PrintLastLog no\nMaxStartups 200:30:400\nLogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
                )
                host.process = subprocess.Popen(
                    [sshd, "-D", "-e", "-f", str(config), "-E", str(home / "sshd.log")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                self.hosts.append(host)
                lines.append(f"[{address}]:{port} {' '.join(host_key.split()[:2])}")
            known.write_text("\n".join(lines) + "\n")
            for host in self.hosts:
                self._wait_listening(host)
        except BaseException:
            self.stop()
            raise
        return self.hosts

    def _wait_listening(self, host: Host) -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert host.process is not None
            if host.process.poll() is not None:
                log = (host.folder / "sshd.log").read_text(errors="replace") if (host.folder / "sshd.log").exists() else ""
                raise Unavailable(f"sshd on {host.address}:{host.port} exited: {log.strip()[-500:]}")
            try:
                with socket.create_connection((host.address, host.port), timeout=1) as s:
                    if s.recv(4) == b"SSH-":
                        return
            except OSError:
                time.sleep(0.05)
        raise Unavailable(f"sshd on {host.address}:{host.port} did not start listening")

    def stop(self) -> None:
        for host in self.hosts:
            host.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.hosts and self.hosts[0].user == ACCOUNT:
            # The attempts' records the tests left on the "hosts" (the account is ours).
            shutil.rmtree(os.path.join(pwd.getpwnam(ACCOUNT).pw_dir, ".abreast"), ignore_errors=True)
