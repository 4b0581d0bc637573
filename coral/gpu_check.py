"""`python -m coral.gpu_check`: the paper preset's GPU path, measured as it runs, in 6 minutes at most
(benchmarks/gpu_check.sh). The cost model (coral.plan, coral.measured) reads every row it writes.

What it measures, on the paper preset's networks at 32 px (CIFAR) and 64 px (CelebA-5, ImageNet-LT):
- the training step (coral.step.build_training and training_step on batches drawn by DeviceBatches):
  ms/step, FLOPs, TFLOP/s, MFU against the card's dense bf16 peak, and the step's own peak memory; eager,
  compiled (train.compile) and compiled with CUDA graphs (train.cuda_graphs); fp32 (cuDNN's TF32
  convolutions) and bf16 autocast; NCHW and channels-last; per-GPU batches of 128 (one GPU) and 16, 32,
  64 (DDP on 8, 4 and 2 GPUs);
- the sampler's denoising step (coral.sample.denoise) at sample.batch_size and half of it (the batch a
  40 GB card takes), eager and compiled (sample.compile), and its peak memory;
- host synchronisations: the training and sampling loops under torch.cuda.set_sync_debug_mode("warn").

The budget. The check stops starting measurements that would end after BUDGET_S (360 s) and records
them as skipped, with the estimate that did not fit. Estimates per measurement on an H100 (ESTIMATE_S):
start-up 20 s; an eager training step 3 s (build, 3 warm-up and 8 timed steps); an eager sampling step
8 s (2 x 1000 images through the 64 px network, 4 times); the first compiled step of a configuration
60 s and the second 60 s (torch recompiles once with a dynamic batch; later batches reuse it), replaced
by the mean of the compiles measured so far. Measurements run in the order that matters to the plan:
eager steps of every kind first (22 training and 4 sampling measurements, about 120 s with the start-up:
the plan's figures for every job), then CUDA graphs at 64 px (the 8-GPU goal) and 32 px, compiled
sampling, compile without graphs, then the other precision, CBDM and channels-last compiled (18 compiles
in all). A cold run (no inductor cache on the machine) fits about four compiles; a second run finds
torch's compile cache warm (about 10 s a compile) and fits most or all of the rest. Skipped as
unable to matter: channels-last in eager mode (slower in all 20 eager cases on the H100, 2026-11-28:
GroupNorm has no channels-last kernel) and the objectives that run DDPM's network unchanged (T2H,
CORAL) beyond batch 128 eager: the plan scales them by FLOPs from DDPM's step.

`--dry-run` runs every code path on the CPU at tiny sizes (for tests), compiling with torch.compile's
"eager" backend (dynamo traces, no code is generated) and one compiled configuration per mode; CUDA
graphs need a CUDA device. Its numbers mean nothing.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import time
import traceback
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from coral.bench import PEAK_BF16_FLOPS
from coral.measure import machine_description
from coral.config import load_yaml, preset_config, validate
from coral.grid import deep_merge, run_config
from coral.io import provenance, write_json
from coral.longtail import long_tail_counts
from coral.compiled_step import CompiledStep
from coral.sample import denoise, denoising_step
from coral.sections import SampleConfig, TrainConfig
from coral.sources import NUM_CLASSES
from coral.tensors import default_device
from coral.step import build_training, training_step
from coral.batches import DeviceBatches
from coral.unet import build_unet

SETTINGS = {32: "cifar10-rho0.01", 64: "imagenet_lt"}  # the paper preset's 32 px and 64 px networks
BUDGET_S = 360
ESTIMATE_S = {"start": 20, "eager": 3, "sample": 8, "compile": 60}
DEVICES = (1, 8, 4, 2)  # GPUs of a DDP run: the per-GPU batch is the preset's batch over them
# MERGE HOOKS (issue 20): a mode is measured once its config key exists, i.e. once coral.train implements
# train.cuda_graphs and coral.sample implements sample.compile; until then its rows say "not implemented yet".
IMPLEMENTED = {"train.cuda_graphs": "cuda_graphs" in TrainConfig.keys(),
               "sample.compile": "compile" in SampleConfig.keys()}


class Group(NamedTuple):
    """Measurements of one configuration, at several batches (per-GPU training batches or sampling batches)."""
    phase: str  # training or sampling
    size: int
    objective: str
    dtype: str
    layout: str
    mode: str  # eager, compile or cuda_graphs
    batches: tuple  # as fractions of the preset's batch: 1, 1/8, ...


def measurement_plan() -> list[Group]:
    """Every measurement, in the order that matters to the plan (see the module docstring)."""
    paper = {64: ("bf16", "nchw"), 32: ("fp32", "nchw")}  # the paper preset's training configuration
    other = {"fp32": "bf16", "bf16": "fp32"}
    ddp = tuple(1 / n for n in DEVICES)
    groups = []
    for size, (dtype, layout) in paper.items():
        groups += [Group("training", size, "ddpm", dtype, layout, "eager", ddp),
                   Group("training", size, "cbdm", dtype, layout, "eager", (1, 1 / 8)),
                   Group("training", size, "ddpm", other[dtype], layout, "eager", (1, 1 / 8))]
        groups += [Group("training", size, objective, dtype, layout, "eager", (1,))
                   for objective in ("t2h", "coral", "coral_ambient")]
    groups += [Group("sampling", size, "ddpm", "fp32", "nchw", "eager", (1, 1 / 2)) for size in paper]
    groups += [Group("training", size, "ddpm", *paper[size], "cuda_graphs", (1 / 8, 1, 1 / 4, 1 / 2)) for size in paper]
    groups += [Group("sampling", size, "ddpm", "fp32", "nchw", "compile", (1,)) for size in paper]
    groups += [Group("training", size, "ddpm", *paper[size], "compile", (1, 1 / 8)) for size in paper]
    for size, (dtype, layout) in paper.items():
        groups += [Group("training", size, "ddpm", other[dtype], layout, "cuda_graphs", (1,)),
                   Group("training", size, "cbdm", dtype, layout, "cuda_graphs", (1, 1 / 8)),
                   Group("training", size, "ddpm", dtype, "channels_last", "cuda_graphs", (1,))]
    return groups


def paper_config(config_path: str | Path, dry_run: bool) -> dict:
    """The paper preset (datasets need not exist); with dry_run its sizes shrunk to a few ms per step."""
    cfg = preset_config(load_yaml(config_path), "paper")
    if not dry_run:
        return cfg
    cfg = deep_merge(cfg, {"model": {"ch": 32, "num_res_blocks": 1}, "train": {"batch_size": 16},
                           "sample": {"batch_size": 4}, "diffusion": {"T": 10},
                           "data": {"image_size": 8}, "dataset_overrides": {
                               "imagenet_lt": {"data": {"image_size": 16}}}})
    cfg["data"]["settings"] = [s for s in cfg["data"]["settings"] if s["dataset"] != "imagenet_lt"] + [
        {"dataset": "imagenet_lt"}]
    validate(cfg, check_files=False)
    return cfg


def _class_counts(dataset: str) -> torch.Tensor:
    num_classes = NUM_CLASSES[dataset]
    return torch.tensor(long_tail_counts(1280 if num_classes == 1000 else 5000, 0.01, num_classes))


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _allocated(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


def _peak_gb(device: torch.device, before: int) -> float | None:
    """The peak since _free, less what was allocated before the measured step was built (CUDA graph
    pools of this configuration's earlier batches): the step's own peak, in GiB."""
    return (torch.cuda.max_memory_allocated(device) - before) / 2 ** 30 if device.type == "cuda" else None


class _TrainingLoop:
    """The training loop's per-step work on a resident uint8 pool of random images."""

    def __init__(self, run: dict, device: torch.device, in_channels: int = 3):
        dataset = run["run"]["dataset"]
        size, batch = run["data"]["image_size"], run["train"]["batch_size"]
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (4 * batch, in_channels, size, size), dtype=torch.uint8,
                                    generator=generator).to(device)
        self.labels = torch.randint(0, NUM_CLASSES[dataset], (4 * batch,), generator=generator).to(device)
        self.setup = build_training(run, _class_counts(dataset), in_channels, NUM_CLASSES[dataset], device)
        self.setup.model.train()
        self.batches = DeviceBatches(len(self.images), batch, 0, device)
        self.run, self.step, self.sums = run, 0, {}

    def __call__(self) -> None:
        idx = self.batches(self.step)
        terms = training_step(self.setup, self.images[idx], self.labels[idx], self.run, self.step)
        for name, value in terms.items():
            self.sums[name] = self.sums.get(name, 0) + value.detach().float()
        self.step += 1


def _time_ms(fn, device: torch.device, warmup: int, repeats: int) -> tuple[float, float]:
    """ms per call over `repeats` calls after `warmup`, and the seconds of the first call (compilation)."""
    start = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats * 1e3, first


def _flops(fn) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return float(counter.get_total_flops())


def _sync_warnings(fn, device: torch.device, calls: int) -> list[str]:
    """Warnings torch raises for host synchronisations during `calls` calls of fn (after one warm call)."""
    if device.type != "cuda":
        return []
    fn()
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(calls):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sorted({f"{w.filename}:{w.lineno}: {w.message}" for w in caught})


class Check:
    """The measurements of one run of the check, against its budget."""

    def __init__(self, cfg: dict, device: torch.device, dry_run: bool):
        self.cfg, self.device, self.dry_run = cfg, device, dry_run
        self.started = time.perf_counter()
        self.rows = {"training": [], "sampling": []}
        self.sync = {"training_loop": {}, "sampling_loop": []}
        self.flops: dict = {}  # (size, objective, batch) -> FLOPs of an eager step
        self.compiles: list[float] = []  # seconds of each compilation measured
        self.compiled_modes: set = set()  # (phase, mode) of the compiled groups a dry run measured

    def estimate(self, group: Group, index: int) -> float:
        if group.mode == "eager":
            return ESTIMATE_S["eager" if group.phase == "training" else "sample"]
        compile_s = sum(self.compiles) / len(self.compiles) if self.compiles else ESTIMATE_S["compile"]
        return compile_s + ESTIMATE_S["eager"] if index < 2 else ESTIMATE_S["eager"]

    def skip_reason(self, group: Group, index: int) -> str | None:
        key = {"cuda_graphs": "train.cuda_graphs", "compile": "sample.compile" if group.phase == "sampling" else None}
        hook = key.get(group.mode)
        if hook and not IMPLEMENTED[hook]:
            return f"{hook} is not implemented yet (merge hook in coral/gpu_check.py)"
        if group.mode == "cuda_graphs" and self.device.type != "cuda":
            return "CUDA graphs need a CUDA device"
        if self.dry_run:
            done = group.mode != "eager" and (group.phase, group.mode) in self.compiled_modes
            return "dry run: one compiled configuration per mode" if done else None
        elapsed, estimate = ESTIMATE_S["start"] + time.perf_counter() - self.started, self.estimate(group, index)
        if elapsed + estimate > BUDGET_S:
            return f"budget: {elapsed:.0f} s spent, {estimate:.0f} s estimated, {BUDGET_S} s in all"
        return None

    def run(self, groups: list[Group]) -> None:
        for group in groups:
            if group.mode != "eager":
                torch._dynamo.reset()  # each configuration compiles as a fresh job would
            for index, fraction in enumerate(group.batches):
                row = self.measure(group, index, fraction)
                self.rows[group.phase].append(row)
                print(json.dumps(row), flush=True)
            if group.mode != "eager" and self.dry_run:
                self.compiled_modes.add((group.phase, group.mode))

    def measure(self, group: Group, index: int, fraction: float) -> dict:
        setting = SETTINGS[group.size]
        base = run_config(self.cfg, setting, group.objective, 0)
        full = base["train"]["batch_size"] if group.phase == "training" else self.cfg["sample"]["batch_size"]
        row = {"image_size": group.size, "dtype": group.dtype, "layout": group.layout,
               "compile": group.mode != "eager", "cuda_graphs": group.mode == "cuda_graphs",
               "batch_size": int(full * fraction)}
        if group.phase == "training":
            row.update(objective=group.objective, devices=round(1 / fraction), setting=setting)
        else:
            row["guided"] = True
        reason = self.skip_reason(group, index)
        if reason:
            return {**row, "skipped": reason}
        _free(self.device)
        try:
            before = _allocated(self.device)
            measure = self._training if group.phase == "training" else self._sampling
            row.update(measure(group, base, row, before))
            if group.mode != "eager" and index < 2 and "compile_s" in row and not self.dry_run:
                self.compiles.append(row["compile_s"])
        except Exception as err:  # one failed measurement (out of memory, say) must not end the check
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            traceback.print_exc()
        return row

    def _training(self, group: Group, base: dict, row: dict, before: int) -> dict:
        train = {**base["train"], "batch_size": row["batch_size"], "bf16_autocast": group.dtype == "bf16",
                 "channels_last": group.layout == "channels_last", "compile": group.mode != "eager"}
        if group.mode == "cuda_graphs":
            train["cuda_graphs"] = True
        loop = _TrainingLoop({**base, "train": train}, self.device)
        key = (group.size, group.objective, row["batch_size"])
        if group.mode == "eager" and key not in self.flops:
            self.flops[key] = _flops(loop)
        warmup, repeats = (1, 1) if self.dry_run else (3, 8)
        ms, first = _time_ms(loop, self.device, warmup, repeats)
        counted = self.flops.get(key) or next((flops * row["batch_size"] / batch for (size, objective, batch), flops
                                               in self.flops.items() if (size, objective) == key[:2]), None)
        result = {"ms_per_step": ms, "peak_memory_gb": _peak_gb(self.device, before),
                  **({"compile_s": first - ms / 1e3} if group.mode != "eager" else {})}
        if counted:
            result.update(flops_per_step=counted, tflops=counted / ms * 1e3 / 1e12)
        if (group.mode == "eager" and row["batch_size"] == base["train"]["batch_size"] and group.size == 64
                and group.objective not in self.sync["training_loop"]):
            self.sync["training_loop"][group.objective] = _sync_warnings(loop, self.device, 3)
        return result

    def _sampling(self, group: Group, base: dict, row: dict, before: int) -> dict:
        dataset, batch = base["run"]["dataset"], row["batch_size"]
        model = build_unet(base["model"], 3, NUM_CLASSES[dataset]).to(self.device).eval().requires_grad_(False)
        from coral.diffusion import Diffusion  # a schedule of 2 steps: each ancestral step costs one of the 1000
        diffusion = Diffusion(2, base["diffusion"]["beta_1"], base["diffusion"]["beta_T"]).to(self.device)
        options = {"sampler": "ddpm", "omega": 1.0, "seed": 0, "batch_size": batch,
                   "bf16_autocast": group.dtype == "bf16", "compile": group.mode == "compile"}
        step_cfg = dataclasses.replace(SampleConfig.of(self.cfg["sample"], "sample"), **options)
        step = None
        if group.mode == "compile":  # as coral.sample runs sample.compile: with CUDA graphs on a GPU
            step = CompiledStep(denoising_step(model, diffusion, step_cfg), batch, self.device)
            row["cuda_graphs"] = step.cuda_graphs
        labels, ids = torch.arange(batch) % NUM_CLASSES[dataset], torch.arange(batch)
        shape = (3, base["data"]["image_size"], base["data"]["image_size"])
        two_steps = lambda: denoise(model, diffusion, labels, ids, step_cfg, shape, step=step)  # noqa: E731
        ms, first = _time_ms(two_steps, self.device, 1 if self.dry_run else 2, 1 if self.dry_run else 3)
        if group.mode == "eager" and group.size == 64 and batch == self.cfg["sample"]["batch_size"]:
            self.sync["sampling_loop"] = _sync_warnings(two_steps, self.device, 2)
        return {"ms_per_denoising_step": ms / 2, "peak_memory_gb": _peak_gb(self.device, before),
                **({"compile_s": first - ms / 1e3} if group.mode != "eager" else {})}


def run_check(config_path: str | Path, out_dir: str | Path, dry_run: bool = False) -> Path:
    device = torch.device("cpu") if dry_run else default_device()
    if device.type != "cuda" and not dry_run:
        raise SystemExit("gpu_check needs a CUDA device (use --dry-run to exercise it on the CPU)")
    check = Check(paper_config(config_path, dry_run), device, dry_run)
    real_compile = torch.compile
    if dry_run:  # dynamo traces as on a GPU; the "eager" backend generates no code (no compiler needed)
        torch.compile = lambda model=None, **options: real_compile(model, backend="eager")
    try:
        check.run(measurement_plan())
    finally:
        torch.compile = real_compile
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-dry-run"
    peak = next((value for name, value in PEAK_BF16_FLOPS.items() if name in gpu), None)
    for row in check.rows["training"]:
        if "tflops" in row:
            row["mfu"] = row["tflops"] * 1e12 / peak if peak else None
    machine = machine_description(device)
    if device.type == "cuda":
        machine["gpu_memory_gb"] = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
    result = {"machine": machine, "peak_bf16_flops": peak, "dry_run": dry_run, "budget_s": BUDGET_S,
              "torch_settings": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                                 "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                 "cudnn_benchmark": torch.backends.cudnn.benchmark},
              **check.rows, "sync_warnings": check.sync,
              "seconds": time.perf_counter() - check.started, "provenance": provenance()}
    path = Path(out_dir) / f"gpu_check-{gpu.replace(' ', '_')}.json"
    write_json(path, result)
    _print_summary(result)
    return path


def _mode(row: dict) -> str:
    return "graphs" if row.get("cuda_graphs") else "compile" if row.get("compile") else "eager"


def _print_summary(result: dict) -> None:
    print(f"\n{result['machine'].get('gpu', 'cpu')}: {result['seconds']:.0f} s of a {result['budget_s']} s budget")
    print(f"{'px':>3} {'objective':<14}{'variant':<28}{'batch':>6}{'ms/step':>9}{'TFLOP/s':>9}{'peak GB':>9}")
    for row in result["training"]:
        variant = f"{row['dtype']}/{row['layout']}/{_mode(row)}"
        start = f"{row['image_size']:>3} {row['objective']:<14}{variant:<28}{row['batch_size']:>6}"
        if "ms_per_step" in row:
            tflops = f"{row['tflops']:.1f}" if row.get("tflops") else "-"
            peak = f"{row['peak_memory_gb']:.1f}" if row.get("peak_memory_gb") else "-"
            print(f"{start}{row['ms_per_step']:>9.1f}{tflops:>9}{peak:>9}")
        else:
            print(f"{start}  {row.get('error') or row.get('skipped')}")
    for row in result["sampling"]:
        variant = f"{row['dtype']}/{row['layout']}/{_mode(row)}"
        value = (f"{row['ms_per_denoising_step']:.1f} ms/denoising step of {2 * row['batch_size']} images, "
                 f"peak {row['peak_memory_gb'] or 0:.1f} GB") if "ms_per_denoising_step" in row else \
            row.get("error") or row.get("skipped")
        print(f"sample {row['image_size']} px {variant} batch {row['batch_size']}: {value}")
    for name, found in result["sync_warnings"].items():
        print(f"sync warnings, {name}: {found if found else 'none'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config.yaml", help="config file holding the paper preset")
    parser.add_argument("--out", default="benchmarks/results", help="folder of the JSON result")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: exercise every code path")
    args = parser.parse_args(argv)
    print(run_check(args.config, args.out, args.dry_run))


if __name__ == "__main__":
    main()
