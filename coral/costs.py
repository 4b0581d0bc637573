"""What one job needs (JobCost), and the stated assumptions about any job's start-up and memory that the
cost model (coral.plan) and the costs of the jobs around training and sampling (coral.job_costs) share."""
from __future__ import annotations

from dataclasses import dataclass, field

GB = 2 ** 30  # GiB: torch's unit for memory, SLURM's --mem counts MiB, and an "80GB" card holds about 80 of them
START_SECONDS = {"gpu": 120, "cpu": 30}  # imports, CUDA start-up, reading inputs, resuming a checkpoint
HOST_BASE_GB = {"gpu": 4.0, "cpu": 1.0}  # resident size of a job's Python, torch (and CUDA) before its data
CUDA_CONTEXT_GB = 1.0                # GPU memory of the CUDA context and cuDNN workspaces, beyond torch's allocations


@dataclass(frozen=True)
class JobCost:
    """What one job needs: device work, CPU work, memory and disk, and where its figures came from."""

    rule: str
    gpu: bool
    gpu_seconds: float = 0.0           # wall time of its GPU work, without start-up
    cpu_seconds: float = 0.0           # CPU-bound work on one core
    cpus: int = 1
    devices: int = 1                   # GPUs it runs on: its GPU-hours are devices x its wall time
    gpu_memory_gb: float = 0.0         # peak on each of them
    host_memory_gb: float = 1.0
    disk_gb: float = 0.0
    fitted: str = ""                   # a batch chosen for the card: "<key> <value>"
    memory_fix: str = ""               # what to set where its GPU memory would exceed the card's
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def work_seconds(self) -> float:
        return self.gpu_seconds + self.cpu_seconds / self.cpus

    @property
    def start_seconds(self) -> float:
        return START_SECONDS["gpu" if self.gpu else "cpu"]
