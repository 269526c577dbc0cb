"""Benchmark: 500 no-op executions on 10 sshd hosts through `abreast run` (the ssh
adapter), against `xargs -P10 ssh` over multiplexed connections, and against Ansible.

Ten sshd hosts on loopback (tests/sshd.py: 127.0.0.2-11). The deployment: 50 targets,
five per host (round robin, so a window of 10 touches every host), 10 steps of
`run: "true"`, window 10 — at most 10 commands at once, as with `xargs -P10` and
Ansible's `forks: 10`. Every event is committed to a fresh SQLite file.

- abreast: `abreast run --quiet`, whole process; it opens its 10 master connections
  (ControlMaster) itself, inside the measured time, and closes them at the end.
- xargs: `xargs -P10 -L1 ssh -T -S SOCKET -p PORT ADDRESS true`, 500 lines, round robin
  over the hosts, over 10 master connections opened beforehand (not timed; the time to
  open them is printed apart).
- Ansible (`pip install ansible-core`; not a dependency of abreast): one playbook, the
  10 hosts as inventory, `strategy: free`, `forks: 10`, `gather_facts: false`, 50 tasks
  `command: "true"` (500 executions; `command` is what `ansible all -a true` runs), or
  `raw: "true"` with `--ansible-module raw` (Ansible's fastest: no Python on the host);
  Ansible's defaults otherwise (no pipelining unless `--ansible-pipelining`), SSH
  multiplexed by its own ControlPersist, the hosts serving sftp as servers do. Skipped
  when ansible-playbook is not installed.

Alternating rounds; each time, and the ratios of the medians.

    python tests/bench/bench_ssh.py [--rounds 3] [--no-ansible] [--ansible-module command|raw]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.sshd import Host, Hosts  # noqa: E402

HOSTS, TARGETS_PER_HOST, STEPS, WINDOW = 10, 5, 10, 10


def scenario(hosts: list[Host]) -> dict:
    targets = [hosts[i % len(hosts)].target(f"t{i:02d}", ["app"]) for i in range(len(hosts) * TARGETS_PER_HOST)]
    return {
        "name": f"bench ssh: {len(targets)} targets on {len(hosts)} hosts x {STEPS} steps",
        "policy": {"max_parallel_targets": WINDOW},
        "targets": targets,
        "steps": [{"name": f"step-{j:02d}", "roles": ["app"], "run": "true"} for j in range(STEPS)],
    }


def open_masters(hosts: list[Host], folder: Path) -> list[str]:
    sockets = []
    procs = []
    for i, host in enumerate(hosts):
        sock = str(folder / f"m{i}")
        sockets.append(sock)
        argv = host.ssh()[:-1]  # everything but the address
        procs.append(subprocess.Popen([*argv[:1], "-M", "-f", "-N", "-S", sock, "-o", "ControlPersist=600", *argv[1:], host.address]))
    for p in procs:
        assert p.wait() == 0
    return sockets


def close_masters(hosts: list[Host], sockets: list[str]) -> None:
    for host, sock in zip(hosts, sockets):
        subprocess.run(["ssh", "-S", sock, "-O", "exit", host.address], capture_output=True)


def xargs_lines(hosts: list[Host], sockets: list[str], n: int) -> str:
    return "".join(f"-S {sockets[i % len(hosts)]} -p {hosts[i % len(hosts)].port} {hosts[i % len(hosts)].address} true\n" for i in range(n))


def inventory(hosts: list[Host]) -> dict:
    common = " ".join(f"-o {k}={v}" for k, v in hosts[0].options().items())
    return {"all": {"hosts": {
        f"h{i:02d}": {"ansible_host": h.address, "ansible_port": h.port, "ansible_user": h.user,
                      "ansible_ssh_private_key_file": h.identity_file, "ansible_ssh_common_args": common}
        for i, h in enumerate(hosts)
    }}}


def playbook(module: str) -> list:
    tasks = [{"name": f"no-op {j:02d}", module: "true"} for j in range(STEPS * TARGETS_PER_HOST)]
    return [{"hosts": "all", "gather_facts": False, "strategy": "free", "tasks": tasks}]


def timed(cmd: list[str] | str, cwd: Path, shell: bool = False, stdin: str | None = None, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, shell=shell, check=True, input=stdin, text=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-ansible", action="store_true")
    ap.add_argument("--ansible-module", choices=("command", "raw"), default="command",
                    help="command: Ansible's default for a command (as `ansible all -a true`); raw: its fastest, no Python")
    ap.add_argument("--ansible-pipelining", action="store_true", help="Ansible with pipelining (off by default in Ansible)")
    args = ap.parse_args()
    ansible = None if args.no_ansible else shutil.which("ansible-playbook") or (
        str(Path(sys.executable).parent / "ansible-playbook") if (Path(sys.executable).parent / "ansible-playbook").exists() else None
    )
    n = HOSTS * TARGETS_PER_HOST * STEPS
    hosts_up = Hosts(HOSTS)
    hosts = hosts_up.start()
    a_times: list[float] = []
    x_times: list[float] = []
    s_times: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ssh-", dir="/tmp") as tmp:
            folder = Path(tmp)
            (folder / "bench.yaml").write_text(yaml.safe_dump(scenario(hosts)))
            (folder / "inventory.yaml").write_text(yaml.safe_dump(inventory(hosts)))
            (folder / "playbook.yaml").write_text(yaml.safe_dump(playbook(args.ansible_module)))
            env = dict(os.environ, ANSIBLE_FORKS="10", ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_STDOUT_CALLBACK="default",
                       ANSIBLE_PIPELINING=str(args.ansible_pipelining), ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
                       ANSIBLE_SSH_CONTROL_PATH_DIR=str(folder / "cp"), ANSIBLE_LOCAL_TEMP=str(folder / "ansible-tmp"))
            lines = None
            for r in range(args.rounds):
                db = folder / f"round-{r}.db"
                a = timed([sys.executable, "-m", "abreast", "run", "bench.yaml", "--db", str(db), "--quiet"], folder)
                t0 = time.perf_counter()
                sockets = open_masters(hosts, folder)
                opened = time.perf_counter() - t0
                lines = lines or xargs_lines(hosts, sockets, n)
                base = ["ssh", "-T", "-o", "BatchMode=yes", "-l", hosts[0].user]
                x = timed(["xargs", "-P10", "-L1", *base], folder, stdin=lines)
                close_masters(hosts, sockets)
                a_times.append(a)
                x_times.append(x)
                line = f"round {r + 1}: abreast run {a:.2f}s   xargs -P10 ssh {x:.2f}s (+{opened:.2f}s opening its masters)   ratio {a / x:.2f}"
                if ansible:
                    s = timed([ansible, "-i", "inventory.yaml", "playbook.yaml", "--forks", "10"], folder, env=env)
                    s_times.append(s)
                    line += f"   ansible-playbook ({args.ansible_module}) {s:.2f}s   ({s / a:.1f}x abreast)"
                print(line, flush=True)
            from engine.store import SqliteStore

            store = SqliteStore(folder / "round-0.db")
            summary = store.deployments()[0]
            finished = [e for e in store.read(summary.id) if type(e).__name__ == "ExecutionFinished"]
            store.close()
    finally:
        hosts_up.stop()
    assert len(finished) == n and all(e.outcome == "succeeded" for e in finished), (len(finished), n)
    am, xm = statistics.median(a_times), statistics.median(x_times)
    print(f"\n{n} no-op executions on {HOSTS} hosts, window {WINDOW}, {summary.events:,} events committed: "
          f"abreast run median {am:.2f}s, xargs -P10 ssh median {xm:.2f}s, ratio {am / xm:.2f} (cores: {os.cpu_count()})")
    if s_times:
        sm = statistics.median(s_times)
        print(f"ansible-playbook ({args.ansible_module}) median {sm:.2f}s: abreast is {sm / am:.1f}x faster")


if __name__ == "__main__":
    main()
