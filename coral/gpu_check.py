"""`python -m coral.gpu_check`: the paper preset's GPU path, measured as it runs (benchmarks/gpu_check.sh).

For the paper preset's networks at 32 px (CIFAR) and 64 px (CelebA-5, ImageNet-LT), every objective's
real training step (coral.step.training_step on batches drawn by coral.train.DeviceBatches) in
{fp32, bf16 autocast} x {NCHW, channels-last}: ms/step, FLOPs (torch's FlopCounterMode), TFLOP/s, MFU
against the card's dense bf16 peak, and peak memory. The sampler's denoising step at the preset's
sampling batch (guidance doubles it) in the same four variants. Then host synchronisations: the
training loop and the sampling loop run under torch.cuda.set_sync_debug_mode("warn"), and every
warning is recorded. One JSON under benchmarks/results/ (`gpu_check-<gpu>.json`) holds everything.

`--dry-run` runs every code path on the CPU at tiny sizes (for tests); its numbers mean nothing.
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

import torch
from torch.utils.flop_counter import FlopCounterMode

from coral import methods
from coral.bench import PEAK_BF16_FLOPS, machine_description
from coral.config import deep_merge, load_yaml, preset_config, run_config, validate
from coral.longtail import long_tail_counts
from coral.io import provenance, write_json
from coral.sample import denoise
from coral.sections import SampleConfig
from coral.sources import NUM_CLASSES
from coral.step import build_training, training_step
from coral.tensors import default_device
from coral.train import DeviceBatches
from coral.unet import build_unet

SETTINGS = {32: "cifar10-rho0.01", 64: "imagenet_lt"}  # the paper preset's 32 px and 64 px networks
VARIANTS = [("fp32", "channels_last"), ("fp32", "nchw"), ("bf16", "channels_last"), ("bf16", "nchw")]
TIME_LIMIT_S = 240  # variants still unmeasured after this are recorded as skipped


def paper_config(config_path: str | Path, dry_run: bool) -> dict:
    """The paper preset (datasets need not exist); with dry_run its sizes shrunk to a few ms per step."""
    cfg = preset_config(load_yaml(config_path), "paper")
    if not dry_run:
        return cfg
    cfg = deep_merge(cfg, {"model": {"ch": 32, "num_res_blocks": 1}, "train": {"batch_size": 4},
                           "sample": {"batch_size": 4}, "diffusion": {"T": 10},
                           "data": {"image_size": 8}, "dataset_overrides": {
                               "imagenet_lt": {"data": {"image_size": 16}}}})
    cfg["data"]["settings"] = [s for s in cfg["data"]["settings"] if s["dataset"] != "imagenet_lt"] + [
        {"dataset": "imagenet_lt"}]
    validate(cfg, check_files=False)
    return cfg


def _variant_run(run: dict, dtype: str, layout: str) -> dict:
    return {**run, "train": {**run["train"], "bf16_autocast": dtype == "bf16",
                             "channels_last": layout == "channels_last", "compile": False}}


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


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


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


def _time_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats * 1e3


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


def check_training(cfg: dict, device: torch.device, started: float, warmup: int, repeats: int) -> tuple[list, dict]:
    rows, sync = [], {}
    time_limit = TIME_LIMIT_S if device.type == "cuda" else float("inf")  # the CPU dry run measures everything
    for image_size, setting in SETTINGS.items():
        for objective in methods.NAMES:
            base = run_config(cfg, setting, objective, 0)
            flops = None
            for dtype, layout in VARIANTS:
                row = {"image_size": image_size, "objective": objective, "dtype": dtype, "layout": layout,
                       "batch_size": base["train"]["batch_size"], "setting": setting}
                rows.append(row)
                if time.perf_counter() - started > time_limit:
                    row["skipped"] = "time limit of the check"
                    continue
                _free(device)
                loop = None
                try:
                    loop = _TrainingLoop(_variant_run(base, dtype, layout), device)
                    if flops is None:
                        flops = _flops(loop)
                    row["ms_per_step"] = _time_ms(loop, device, warmup, repeats)
                    row["peak_memory_gb"] = _peak_gb(device)
                    row["flops_per_step"] = flops
                    row["tflops"] = flops / row["ms_per_step"] * 1e3 / 1e12
                    if (dtype, layout) == VARIANTS[0] and image_size == 64:
                        sync[objective] = _sync_warnings(loop, device, 3)
                except Exception as err:  # one failed variant (out of memory, say) must not end the check
                    row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                    traceback.print_exc()
                del loop
                print(json.dumps(row), flush=True)
    return rows, sync


def check_sampling(cfg: dict, device: torch.device, started: float, warmup: int, repeats: int) -> tuple[list, list]:
    rows, sync = [], []
    time_limit = TIME_LIMIT_S + 30 if device.type == "cuda" else float("inf")
    sample_cfg = dataclasses.replace(SampleConfig.of(cfg["sample"], "sample"), sampler="ddpm", omega=1.0, seed=0)
    for image_size, setting in SETTINGS.items():
        run = run_config(cfg, setting, "ddpm", 0)
        dataset, batch = run["run"]["dataset"], cfg["sample"]["batch_size"]
        labels, ids = torch.arange(batch) % NUM_CLASSES[dataset], torch.arange(batch)
        for dtype, layout in VARIANTS:
            row = {"image_size": image_size, "dtype": dtype, "layout": layout, "batch_size": batch, "guided": True}
            rows.append(row)
            if time.perf_counter() - started > time_limit:
                row["skipped"] = "time limit of the check"
                continue
            _free(device)
            model = None
            try:
                model = build_unet(run["model"], 3, NUM_CLASSES[dataset]).to(device).eval().requires_grad_(False)
                if layout == "channels_last":
                    model = model.to(memory_format=torch.channels_last)
                diffusion = _probe_diffusion(run, device, steps=2)
                step_cfg = dataclasses.replace(sample_cfg, bf16_autocast=dtype == "bf16")
                shape = (3, image_size, image_size)
                two_steps = lambda: denoise(model, diffusion, labels, ids, step_cfg, shape)  # noqa: E731
                row["ms_per_denoising_step"] = _time_ms(two_steps, device, warmup, repeats) / 2
                row["peak_memory_gb"] = _peak_gb(device)
                if (dtype, layout) == ("fp32", "nchw") and image_size == 64:
                    sync = _sync_warnings(two_steps, device, 2)
            except Exception as err:
                row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                traceback.print_exc()
            model = None
            print(json.dumps(row), flush=True)
    return rows, sync


def _probe_diffusion(run: dict, device: torch.device, steps: int):
    """A schedule of `steps` steps: each ancestral step costs the same as one of the full 1000."""
    from coral.diffusion import Diffusion
    return Diffusion(steps, run["diffusion"]["beta_1"], run["diffusion"]["beta_T"]).to(device)


def run_check(config_path: str | Path, out_dir: str | Path, dry_run: bool = False) -> Path:
    started = time.perf_counter()
    device = torch.device("cpu") if dry_run else default_device()
    if device.type != "cuda" and not dry_run:
        raise SystemExit("gpu_check needs a CUDA device (use --dry-run to exercise it on the CPU)")
    cfg = paper_config(config_path, dry_run)
    warmup, repeats = (1, 1) if dry_run else (3, 8)
    training, training_sync = check_training(cfg, device, started, warmup, repeats)
    sampling, sampling_sync = check_sampling(cfg, device, started, 1 if dry_run else 2, 1 if dry_run else 3)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-dry-run"
    peak = next((value for name, value in PEAK_BF16_FLOPS.items() if name in gpu), None)
    for row in training:
        if "tflops" in row:
            row["mfu"] = row["tflops"] * 1e12 / peak if peak else None
    result = {"machine": machine_description(device), "peak_bf16_flops": peak, "dry_run": dry_run,
              "torch_settings": {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                                 "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                                 "cudnn_benchmark": torch.backends.cudnn.benchmark},
              "training": training, "sampling": sampling,
              "sync_warnings": {"training_loop": training_sync, "sampling_loop": sampling_sync},
              "seconds": time.perf_counter() - started, "provenance": provenance()}
    path = Path(out_dir) / f"gpu_check-{gpu.replace(' ', '_')}.json"
    write_json(path, result)
    _print_summary(result)
    return path


def _print_summary(result: dict) -> None:
    print(f"\n{result['machine'].get('gpu', 'cpu')}: {result['seconds']:.0f} s")
    print(f"{'px':>3} {'objective':<14}{'variant':<20}{'ms/step':>9}{'TFLOP/s':>9}{'MFU':>7}{'peak GB':>9}")
    for row in result["training"]:
        variant = f"{row['dtype']}/{row['layout']}"
        if "ms_per_step" in row:
            mfu = f"{row['mfu']:.3f}" if row.get("mfu") else "-"
            peak = f"{row['peak_memory_gb']:.1f}" if row.get("peak_memory_gb") else "-"
            print(f"{row['image_size']:>3} {row['objective']:<14}{variant:<20}{row['ms_per_step']:>9.1f}"
                  f"{row['tflops']:>9.1f}{mfu:>7}{peak:>9}")
        else:
            print(f"{row['image_size']:>3} {row['objective']:<14}{variant:<20} {row.get('error') or row.get('skipped')}")
    for row in result["sampling"]:
        variant = f"{row['dtype']}/{row['layout']}"
        value = (f"{row['ms_per_denoising_step']:.1f} ms/denoising step of {2 * row['batch_size']} images, "
                 f"peak {row['peak_memory_gb'] or 0:.1f} GB") if "ms_per_denoising_step" in row else \
            row.get("error") or row.get("skipped")
        print(f"sample {row['image_size']} px {variant}: {value}")
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
