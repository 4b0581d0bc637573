"""One run on N devices (train.devices): torch DDP, one process per device, started by torch's elastic
launcher (torchrun's).

`launch`, called by coral.train.train in the job's own process, starts N processes of
`python -m coral.train` on this node; each joins the process group (NCCL on GPUs, gloo on the CPU) and
runs the training loop (coral.train.rank_main) on its device with its `Ranks` (coral.ranks):

- the global batch (train.batch_size) is split evenly over the ranks: each rank draws the same global
  batch and trains on its slice (coral.step), so with dropout 0 N processes reproduce one up to rounding;
  the network's dropout draws from a stream of each rank's own (`Ranks.own_stream`);
- rank 0 writes everything (log, stats, checkpoints, final.pt, lineage, the kept copy), the others nothing;
- a stop is agreed: when any rank's deadline nears or it got SIGTERM/SIGUSR1 (SLURM signals every
  process of a job), every rank stops at the same step and rank 0 saves. The launching process only
  notes such a signal: forwarded, it would reach the ranks twice (a second signal stops at once);
- the outcome (finished, out of time, diverged) comes back to `launch`, so the job ends as a job of one
  process does (exit code 75 to be resubmitted).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import torch

from coral.deadline import Deadline
from coral.jobs import job_log

log = logging.getLogger(__name__)



def launch(run_cfg: dict, split_path: str | Path, run_dir: str | Path, time_budget: float | None) -> dict:
    """Train the run on train.devices processes of this node; returns rank 0's outcome: {"status":
    "finished" | "out_of_time" | "diverged", "message"}. A rank that fails raises ChildFailedError."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch


    devices = run_cfg["train"]["devices"]
    if torch.cuda.is_available() and torch.cuda.device_count() < devices:
        raise RuntimeError(f"train.devices: {devices} GPUs asked for, {torch.cuda.device_count()} visible to this job")
    log.info("training on %d processes: DDP over %s", devices,
             "NCCL, one GPU each" if torch.cuda.is_available() else "gloo on the CPU")
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=devices, run_id=f"coral-{uuid.uuid4().hex}",
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.2,
                          signals_to_handle="SIGINT,SIGHUP,SIGQUIT")
    # The ranks import coral as this process did (a workflow job finds it beside its script).
    package_root = str(Path(sys.modules["coral"].__file__).parent.parent)
    with tempfile.TemporaryDirectory(prefix="coral-launch-") as tmp, _environment(PYTHONPATH=package_root), \
            _kept_handlers(signal.SIGINT, signal.SIGHUP, signal.SIGQUIT), Deadline(None):
        outcome = Path(tmp) / "outcome.json"
        arguments = Path(tmp) / "arguments.json"
        arguments.write_text(json.dumps({
            "run_cfg": run_cfg, "split": str(split_path), "run_dir": str(run_dir), "time_budget": time_budget,
            "log": job_log(), "threads": max(1, torch.get_num_threads() // devices), "outcome": str(outcome)}))
        logging.getLogger("torch.distributed.elastic").setLevel(logging.WARNING)
        elastic_launch(config, sys.executable)("-m", "coral.train", str(arguments))
        return json.loads(outcome.read_text())


@contextlib.contextmanager
def _environment(PYTHONPATH: str) -> Iterator[None]:
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([PYTHONPATH] + ([saved] if saved else []))
    try:
        yield
    finally:
        if saved is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = saved


@contextlib.contextmanager
def _kept_handlers(*signums: int) -> Iterator[None]:
    """The launcher replaces these signals' handlers; put the caller's back after."""
    saved = {signum: signal.getsignal(signum) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
