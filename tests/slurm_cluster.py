"""A one-node SLURM cluster on this machine, for tests: munged, slurmctld and slurmd started in
the foreground as child processes and stopped by their PIDs.

The node advertises one GPU per CPU, each faked as a gres backed by a character device (/dev/null's
numbers), so GPU rules are scheduled as on a real cluster, side by side. Needs root and Debian's
slurmctld, slurmd, slurm-client and munge packages (.ci/run installs them).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

CONF_DIR = Path("/etc/slurm")  # the plugin's job steps drop SLURM_CONF: the config must sit here
MARKER = "# written by coral's tests/slurm_cluster.py"
LOCK = Path("/tmp/coral-test-slurm-cluster.lock")
FAKE_GPU_PREFIX = "/dev/coral-fake-gpu"
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "srun"]


def missing_requirements() -> str | None:
    """Why no cluster can be started here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    missing = [name for name in BINARIES if shutil.which(name) is None and not Path("/usr/sbin", name).exists()]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurmctld slurmd slurm-client munge)"
    conf = CONF_DIR / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text():
        return f"{conf} belongs to another cluster; not overwriting it"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _write_config(workdir: Path) -> None:
    """slurm.conf and gres.conf; fresh ports each time (the last cluster's may still be in TIME_WAIT)."""
    host = socket.gethostname().split(".")[0]
    memory_mb = int(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 * 0.9)
    cpus = os.cpu_count() or 1
    CONF_DIR.mkdir(parents=True, exist_ok=True)
    (CONF_DIR / "slurm.conf").write_text(f"""{MARKER}
ClusterName=coral-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={workdir}/state
SlurmdSpoolDir={workdir}/spool
SlurmctldPidFile={workdir}/slurmctld.pid
SlurmdPidFile={workdir}/slurmd.pid
SlurmctldLogFile={workdir}/slurmctld.log
SlurmdLogFile={workdir}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
GresTypes=gpu
NodeName={host} CPUs={cpus} RealMemory={memory_mb} Gres=gpu:{cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    (CONF_DIR / "gres.conf").write_text(f"{MARKER}\nNodeName={host} Name=gpu File={FAKE_GPU_PREFIX}[0-{cpus - 1}]\n")
    for index in range(cpus):
        if not Path(f"{FAKE_GPU_PREFIX}{index}").exists():
            subprocess.run(["mknod", f"{FAKE_GPU_PREFIX}{index}", "c", "1", "3"], check=True)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)


def _wait_for_idle_node(timeout: float, daemons: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(daemon.poll() is not None for daemon in daemons):
            raise RuntimeError(f"a SLURM daemon exited at start; see {logs} and {logs.parent / 'slurmctld.log'}")
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"the SLURM node did not come up within {timeout} s (sinfo: {state!r})")


@contextlib.contextmanager
def local_slurm_cluster(workdir: Path, timeout: float = 60) -> Iterator[None]:
    """Start munged, slurmctld and slurmd; stop each (by PID) on exit. One cluster at a time on this
    machine (/etc/slurm and munge's socket are shared): a second test waits for the first's lock."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        with _cluster(workdir, timeout):
            yield


@contextlib.contextmanager
def _cluster(workdir: Path, timeout: float) -> Iterator[None]:
    _write_config(workdir)
    Path("/run/munge").mkdir(exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    logs = workdir / "daemons.log"
    started: list[subprocess.Popen] = []
    try:
        with open(logs, "a") as log:
            started.append(subprocess.Popen(["/usr/sbin/munged", "--foreground", "--force"], user="munge",
                                            stdout=log, stderr=log))
            time.sleep(0.5)
            started.append(subprocess.Popen(["slurmctld", "-D", "-i"], stdout=log, stderr=log))
            time.sleep(1)
            started.append(subprocess.Popen(["slurmd", "-D"], stdout=log, stderr=log))
        _wait_for_idle_node(timeout, started, logs)
        yield
    finally:
        subprocess.run(["scancel", "--user", "root"], capture_output=True)
        for process in reversed(started):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _remove_config()


def _remove_config() -> None:
    """Remove the config this module wrote. Left behind, it points every `scontrol` at a controller that
    is gone: the SLURM executor plugin runs `scontrol show config` whenever Snakemake starts (any
    executor), and each call would wait 9 s for its timeout."""
    for name in ("slurm.conf", "gres.conf"):
        path = CONF_DIR / name
        if path.exists() and MARKER in path.read_text():
            path.unlink()
