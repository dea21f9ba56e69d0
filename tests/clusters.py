"""Real schedulers on this machine, for the tests: a single-node SLURM cluster on 127.0.0.1 and a
local Ray head node, each started in a temporary folder of its own (own munge socket and key, own
ports) and stopped afterwards, so that nothing outside the folder is read or changed.

SLURM needs Debian's `slurm-wlm` and `munge` (what .ci/run installs) and root, as the daemons run
as root here; Ray needs the `ray` extra. Where they are missing a test skips, except in CI (CI=true),
where it fails: CI must run them.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

import pytest

SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"
PASSED_TO_WORKERS = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "LCM_RUNNER_ZOO", "LCM_RUNNER_MODELS",
                     "OMP_NUM_THREADS")
NODE = "lcmnode"


def missing(what: str) -> None:
    """Skip the test for want of `what`, or fail it in CI, which must run it."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: this test must run in CI; .ci/run installs what it needs)", pytrace=False)
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _find(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin") or ""


@dataclass
class Slurm:
    root: Path
    env: Dict[str, str]  # what a client (sbatch, squeue, lcm-run) needs to reach this cluster
    partition: str = PARTITION
    daemons: List[subprocess.Popen] = field(default_factory=list)

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(list(command), env=dict(os.environ, **self.env), capture_output=True, text=True,
                              timeout=60, check=check)

    def queue(self, job: str) -> List[str]:
        """The tasks of `job` that the cluster knows, each as `<job>_<task>|<state>`."""
        out = self.run("squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", job).stdout
        return [line for line in out.splitlines() if line.strip()]

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted((self.root / "log").glob("*.log")))


def start_slurm(root: Path) -> Slurm:
    """munged, slurmctld and slurmd in the foreground, all in `root`, on 127.0.0.1."""
    absent = [name for name in SLURM_BINARIES if not _find(name)]
    if absent:
        missing(f"SLURM is not installed (no {', '.join(absent)}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        missing("the single-node SLURM cluster runs its daemons as root")
    for sub in ("state", "spool", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    munge = root / "munge"
    munge.chmod(0o700)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = munge / "munge.socket"
    conf = root / "slurm.conf"
    mem_mb = 8192  # what the node offers jobs (nothing enforces it: task/none)
    conf.write_text(f"""\
ClusterName=lcmtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'slurmctld.pid'}
SlurmdPidFile={root / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge=600
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={os.cpu_count()} RealMemory={mem_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
""")
    env = {"SLURM_CONF": str(conf)}
    cluster = Slurm(root, env)
    daemon_env = dict(os.environ, **env)
    logs = root / "log"
    try:
        cluster.daemons.append(_start([_find("munged"), "--foreground", "--force", f"--socket={sock}",
                                       f"--key-file={key}", f"--pid-file={munge / 'munged.pid'}",
                                       f"--log-file={logs / 'munged.log'}", f"--seed-file={munge / 'seed'}"],
                                      daemon_env, logs / "munged.out"))
        _wait(lambda: sock.exists(), 20, "munged did not open its socket", cluster)
        cluster.daemons.append(_start([_find("slurmctld"), "-D", "-i", "-f", str(conf)], daemon_env,
                                      logs / "slurmctld.out"))
        cluster.daemons.append(_start([_find("slurmd"), "-D", "-N", NODE, "-f", str(conf)], daemon_env,
                                      logs / "slurmd.out"))
        _wait(lambda: cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip() in ("idle", "mixed"),
              60, "the node did not come up idle", cluster)
    except BaseException:
        stop_slurm(cluster)
        raise
    return cluster


def stop_slurm(cluster: Slurm) -> None:
    """Cancel what is left in the queue, then stop the daemons started (slurmd, slurmctld, munged)."""
    if cluster.daemons and cluster.daemons[-1].poll() is None:
        cluster.run("scancel", "--user", "root", check=False)
        time.sleep(1)
    for daemon in reversed(cluster.daemons):
        _stop(daemon)
    cluster.daemons.clear()


def _start(command: List[str], env: Dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:  # their own session: a Ctrl-C in the terminal is not theirs
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen, grace: float = 15) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait(condition, seconds: float, failure: str, cluster=None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.3)
    raise RuntimeError(f"{failure} within {seconds:.0f} s" + (f"\n{cluster.logs()}" if cluster else ""))


# -- Ray ----------------------------------------------------------------------------------------------
@dataclass
class RayHead:
    root: Path
    address: str
    process: subprocess.Popen


def start_ray(root: Path, cpus: int = 2) -> RayHead:
    """A head node on 127.0.0.1 (`ray start --head --block`, in the foreground), its files in `root`."""
    ray = Path(sys.executable).with_name("ray")
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
    except ImportError:
        missing("Ray is not installed (pip install -e \".[ray]\")")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    # A head started apart from lcm-run: its workers know nothing of the runner's variables (they
    # must come through runtime_env, conf/hydra/launcher/ray_cluster.yaml).
    env = {k: v for k, v in os.environ.items() if k not in PASSED_TO_WORKERS}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # a short temp folder: Ray's socket paths must fit in 107 bytes
    temp = Path(f"/tmp/ray-{os.getpid()}-{port}")
    process = _start([str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                      f"--num-cpus={cpus}", "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                      f"--temp-dir={temp}"], env, root / "ray-head.out")
    head = RayHead(temp, f"127.0.0.1:{port}", process)
    try:
        _wait(lambda: _answers(head) or process.poll() is not None, 90, "the Ray head did not start")
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited:\n{(root / 'ray-head.out').read_text()[-3000:]}")
    except BaseException:
        stop_ray(head)
        raise
    return head


def _answers(head: RayHead) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", int(head.address.rsplit(":", 1)[1]))) == 0


def stop_ray(head: RayHead) -> None:
    """`ray start --block` stops the head's processes on SIGTERM."""
    _stop(head.process, grace=30)
    shutil.rmtree(head.root, ignore_errors=True)
