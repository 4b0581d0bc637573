"""The GPU check's measurements as the cost model (coral.plan) reads them: the entries of
benchmarks/results/gpu_check-<gpu>.json (coral.gpu_check), the one nearest a job, a step's time scaled
from it, the card's memory, the fastest measured configuration and the multi-GPU scaling efficiency.

An entry is one measured step: its image size, objective (training) or guidance (sampling), batch,
configuration (precision `dtype`, `layout`, `compile`, `cuda_graphs`; entries of checks before compile was
measured ran eager), time and peak memory. Rows the check skipped or could not run carry no time and
are left out.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from coral.config import ConfigError

BENCHMARK_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
TIME_KEY = {"training": "ms_per_step", "sampling": "ms_per_denoising_step"}
ENTRY_KEYS = {"training": ("image_size", "objective", "dtype", "layout", "batch_size", "ms_per_step", "flops_per_step"),
              "sampling": ("image_size", "dtype", "layout", "batch_size", "ms_per_denoising_step")}
CONFIGURATION = ("dtype", "layout", "compile", "cuda_graphs")  # how a step runs, besides its batch

# ---------------------------------------------------------------- stated assumptions
# The host's time to issue one ATen op of an eager step (dispatch, autograd, kernel launch): the floor
# of a step's time however few images it holds. On the H100 host the 32 px step (about 2,200 ops) took
# 60-81 ms under bf16 autocast at batch 128, no less than in fp32 with less arithmetic: launch-bound at
# about 30 us an op. The GPU check's per-batch measurements replace it.
ASSUMED_SECONDS_PER_OP = 30e-6
# Data-parallel efficiency on N GPUs of one node (all-reduce of 143 MB of fp32 gradients over NVLink per
# step, mostly overlapped with the backward, plus stragglers) where no multi-GPU run was measured.
ASSUMED_DDP_EFFICIENCY = 0.9
# Cards whose torch name gives no memory size ("NVIDIA H200"), in GiB; for others the name's "<n>GB".
CARD_MEMORY_GB = {"H200": 141, "H100": 80, "A100": 40}
TIE = 0.05  # configurations measured within 5% of the fastest are as fast (the same step varied 60-81 ms)


def benchmark_path(gpu: str, folder: Path = BENCHMARK_DIR) -> Path:
    return Path(folder) / f"gpu_check-{gpu.replace(' ', '_')}.json"


def read_benchmark(path: Path) -> dict | None:
    """The GPU check's JSON at `path` (None when there is none), with only its measured rows, checked."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cluster.gpu: {path} is not valid JSON ({err}); rerun the GPU check or remove it") from None
    for phase, keys in ENTRY_KEYS.items():
        rows = data.get(phase) if isinstance(data, dict) else None
        rows = rows if isinstance(rows, list) else []
        measured = [row for row in rows if isinstance(row, dict) and TIME_KEY[phase] in row]
        if not measured:
            raise ConfigError(f"cluster.gpu: {path} has no measured '{phase}' entries; expected a list of "
                              f"{', '.join(keys)}")
        for row in measured:
            missing = [key for key in keys if key not in row]
            if missing:
                raise ConfigError(f"cluster.gpu: {path} {phase}[{rows.index(row)}] lacks {', '.join(missing)}")
        data[phase] = measured
    return data


def configuration(entry: dict) -> dict:
    return {key: value(entry, key) for key in CONFIGURATION}


def value(entry: dict, key: str):
    """An entry's `key`; an entry without compile or cuda_graphs ran eager, one without guided was guided."""
    if key in entry:
        return entry[key]
    if key == "guided":
        return True
    return False if key in CONFIGURATION else None


def pick_entry(entries: list[dict], want: dict) -> tuple[dict, list[str]]:
    """The entry matching `want` (image_size, batch_size, the configuration and, where given, objective or
    guided), else the nearest: the same configuration first, then the closest image size, objective,
    guidance and batch. Returns the entry and how it differs from `want`."""
    def distance(entry):
        return (sum(value(entry, key) != want[key] for key in CONFIGURATION if key in want),
                abs(math.log2(entry["image_size"] / want["image_size"])),
                "objective" in want and entry.get("objective") != want["objective"],
                "guided" in want and value(entry, "guided") != want["guided"],
                abs(math.log2(entry["batch_size"] / want["batch_size"])))

    best = min(entries, key=distance)
    return best, [f"{key} {value(best, key)} instead of {wanted}" for key, wanted in want.items()
                  if value(best, key) != wanted]


def describe_configuration(found: dict) -> str:
    mode = "compiled + CUDA graphs" if found.get("cuda_graphs") else "compiled" if found.get("compile") else "eager"
    return f"{found['dtype']} {found['layout']} {mode}"


def describe(entry: dict) -> str:
    words = [f"{entry['image_size']} px", describe_configuration(configuration(entry)), f"batch {entry['batch_size']}"]
    return " ".join(words + ([entry["objective"]] if "objective" in entry else [])
                    + (["guided"] if entry.get("guided") else []))


def scaled_seconds(entry_seconds: float, entry_work: float, work: float, ops: int) -> float:
    """A step's seconds from a measured one: in proportion to its work (FLOPs), but not below the host's
    time to launch its `ops` (assumed; at most the measured step's own time). The measured step itself
    when the work is the same."""
    return max(min(ops * ASSUMED_SECONDS_PER_OP, entry_seconds), entry_seconds * work / entry_work)


def card_memory_gb(gpu: str, benchmark: dict | None) -> float:
    """The card's memory in GiB: as the GPU check recorded it, else as its name says."""
    recorded = (benchmark or {}).get("machine", {}).get("gpu_memory_gb")
    if recorded:
        return recorded
    size = re.search(r"(\d+)\s*GB", gpu)
    if size:
        return float(size.group(1))
    known = next((value for name, value in CARD_MEMORY_GB.items() if name in gpu), None)
    if known is None:
        raise ConfigError(f"cluster.gpu: {gpu!r} names no memory size and has no GPU check recording one; allowed: a "
                          f"name with '<n>GB', one containing {', '.join(CARD_MEMORY_GB)}, or run the GPU check")
    return float(known)


def fastest(entries: list[dict], want: dict, knobs: tuple[str, ...]) -> tuple[dict, dict | None] | None:
    """Among the entries like `want` in all but the configuration keys `knobs`: the fastest, and the one of
    want's own configuration (None where it was not measured). None when no entry is like `want`."""
    like = [entry for entry in entries if all(value(entry, key) == wanted for key, wanted in want.items()
                                              if key not in knobs)]
    if not like:
        return None
    time_key = next(key for key in TIME_KEY.values() if key in like[0])
    own = [entry for entry in like if all(value(entry, key) == want[key] for key in knobs)]
    return min(like, key=lambda entry: entry[time_key]), min(own, key=lambda entry: entry[time_key], default=None)


def ddp_efficiency(benchmark: dict | None, devices: int) -> tuple[float, str]:
    """The data-parallel efficiency on `devices` GPUs of one node: measured (the check's `ddp_efficiency`,
    by device count) or assumed."""
    measured = (benchmark or {}).get("ddp_efficiency", {}).get(str(devices))
    if measured:
        return measured, f"DDP efficiency {measured:.2f} on {devices} GPUs (measured)"
    return ASSUMED_DDP_EFFICIENCY, f"DDP efficiency {ASSUMED_DDP_EFFICIENCY:.2f} on {devices} GPUs (assumed)"
