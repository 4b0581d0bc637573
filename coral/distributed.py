"""One run on N devices (train.devices): torch DDP, one process per device, started by torch's elastic
launcher (torchrun's).

`launch`, called by coral.train.train in the job's own process, starts N processes of
`python -m coral.distributed` on this node; each joins the process group (NCCL on GPUs, gloo on the
CPU) and runs the training loop (coral.train) on its device with its `Ranks`:

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
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Ranks:
    """This process's place among the processes of one run, and the collectives the training loop uses
    (each a no-op in a run of one process). `host`: a gloo group for agreeing on the host (stops, the
    resume point) without waiting for the device."""

    rank: int = 0
    world: int = 1
    host: Any = None

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(b, ...) of every rank -> (world * b, ...) in rank order. Gradients flow back to each rank's
        slice, summed over the ranks (each computes the same loss of the whole), which DDP's average
        turns back into the gradient of the one loss."""
        from torch.distributed._functional_collectives import all_gather_single  # traceable by torch.compile
        return all_gather_single(tensor, 0, dist.group.WORLD)

    def gather_detached(self, tensor: torch.Tensor) -> torch.Tensor:
        """As gather, without gradients."""
        if self.world == 1:
            return tensor.detach()
        out = tensor.new_empty((self.world * len(tensor), *tensor.shape[1:]))
        dist.all_gather_into_tensor(out, tensor.detach().contiguous())
        return out

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """values averaged over the ranks, on their device."""
        if self.world == 1:
            return values
        dist.all_reduce(values)
        return values / self.world

    def any(self, flag: bool) -> bool:
        """Whether `flag` holds on any rank."""
        if self.world == 1:
            return flag
        votes = torch.tensor([int(flag)])
        dist.all_reduce(votes, op=dist.ReduceOp.MAX, group=self.host)
        return bool(votes.item())

    def from_main(self, value: Any) -> Any:
        """Rank 0's `value` (a picklable object), on every rank."""
        if self.world == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.host)
        return box[0]

    def own_stream(self, seed: int, step: int, device: torch.device):
        """A context for the network's draws (dropout) from a stream of this rank's own, seeded by (seed,
        step, rank), after which the shared generator continues where it was; none for one process."""
        if self.world == 1:
            return contextlib.nullcontext()
        return _own_stream((seed * 1_000_003 + step) * 1_009 + self.rank, device)


ONE = Ranks()


@contextlib.contextmanager
def _own_stream(seed: int, device: torch.device) -> Iterator[None]:
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


def launch(run_cfg: dict, split_path: str | Path, run_dir: str | Path, time_budget: float | None) -> dict:
    """Train the run on train.devices processes of this node; returns rank 0's outcome: {"status":
    "finished" | "out_of_time" | "diverged", "message"}. A rank that fails raises ChildFailedError."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from coral.cli import job_log
    from coral.deadline import Deadline

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
        elastic_launch(config, sys.executable)("-m", "coral.distributed", str(arguments))
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


def main(argv: list[str] | None = None) -> None:
    """One rank (`python -m coral.distributed ARGUMENTS.json`, started by `launch`)."""
    from coral.cli import setup_job
    from coral.deadline import OutOfTime
    from coral.train import TrainingDiverged, training_loop

    arguments = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    setup_job(arguments["log"], arguments["threads"], append=True, level=logging.INFO if rank == 0 else logging.WARNING)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        host = dist.new_group(backend="gloo")
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
        host = dist.group.WORLD
    outcome = {"status": "finished", "message": ""}
    try:
        training_loop(arguments["run_cfg"], arguments["split"], Path(arguments["run_dir"]), arguments["time_budget"],
                      device, Ranks(rank, world, host))
    except OutOfTime as err:
        outcome = {"status": "out_of_time", "message": str(err)}
    except TrainingDiverged as err:
        outcome = {"status": "diverged", "message": str(err)}
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(arguments["outcome"]).write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
