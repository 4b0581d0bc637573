"""This process's place among the processes of one run (train.devices; coral.distributed starts them),
and the collectives the training step and loop use: each a no-op in a run of one process (ONE)."""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator

import torch
import torch.distributed as dist


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
