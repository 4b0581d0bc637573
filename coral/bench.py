"""`python -m coral bench`: throughput of every stage, measured side by side in one process.

Every speed is reported with the baseline it is divided by, measured in the same run:
the optimised training step vs a naive loop (fp32, a DataLoader over PIL images with
per-sample transforms, a Python-loop EMA), each method's step vs the DDPM step, and
guidance batched into one forward vs two passes, the sampler's step eager vs compiled. Images
are random: throughput does not depend on their content, and the paper-scale datasets need not be on disk.

Each method's training step and the sampler's step also get their graph breaks under torch.compile
and the kernels they launch, eager and compiled (coral.measure).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from coral.compiled_step import CompiledStep
from coral.config import preset_config
from coral.grid import run_config, setting_config, settings as config_settings
from coral.longtail import long_tail_counts
from coral.measure import graph_breaks, interleaved_seconds, kernels_per_call, machine_description, seconds_per_call
from coral.diffusion import Diffusion
from coral.io import atomic_path, provenance, write_json
from coral.methods import NAMES, PAPER_METHODS
from coral.sources import IN_CHANNELS, NUM_CLASSES
from coral.sample import denoising_step, generate
from coral.sections import SampleConfig
from coral.tensors import default_device
from coral.step import build_training, draw_batch, training_step
from coral.unet import build_unet

log = logging.getLogger(__name__)

# Dense bf16 tensor-core peaks (FLOP/s) of cards MFU is reported against.
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
TARGETS = {"coral_over_ddpm_step": ("<=", 1.05), "t2h_over_ddpm_step": ("<=", 1.15),
           "cbdm_over_ddpm_step": ("<=", 2.1), "batched_guidance_speedup": (">=", 1.5),
           "training_speedup_over_naive": (">=", 2.0)}


def bench_settings(raw: dict, preset: str, device: torch.device, cpu_batch: int | None) -> tuple[dict, dict]:
    """The config of `preset` (a raw config's preset; its datasets need not exist) and the benchmark's
    shapes and batch sizes: those of the preset's first setting ('paper': CIFAR10-LT, the paper's network
    on 32x32x3). On a GPU training runs in the precision, layout and compilation the preset trains in;
    on a CPU in fp32, NCHW, uncompiled, with batches of `cpu_batch` where given."""
    cfg = preset_config(raw, preset)
    setting = setting_config(cfg, next(iter(config_settings(cfg))))
    dataset = setting["data"]["dataset"]
    train = dict(setting["train"])
    sample_batch = setting["sample"]["batch_size"]
    if device.type != "cuda":
        train.update(bf16_autocast=False, channels_last=False, compile=False)
        if cpu_batch:
            train["batch_size"] = sample_batch = cpu_batch
    settings = {"setting": setting, "model": setting["model"], "image_size": setting["data"]["image_size"],
                "in_channels": IN_CHANNELS[dataset], "num_classes": NUM_CLASSES[dataset],
                "batch_size": train["batch_size"], "sample_batch_size": sample_batch, "train": train}
    return cfg, settings


def _run_cfg(cfg: dict, settings: dict, method: str) -> dict:
    """The run config of `method` on the benchmark's setting, with the benchmark's training settings."""
    run = run_config({**cfg, "methods": [method]}, next(iter(config_settings(cfg))), method, 0)
    return {**run, "train": settings["train"]}


def _random_batch(settings: dict, device: torch.device, generator: torch.Generator):
    shape = (settings["batch_size"], settings["in_channels"], settings["image_size"], settings["image_size"])
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, settings["num_classes"], (shape[0],), generator=generator).to(device)
    return images, labels


def _training_setup(run: dict, settings: dict, device: torch.device, compile_cache: Path | None = None):
    """A method's training setup on the benchmark's shapes, in training mode, under the shape of a CIFAR10-LT
    prior (rho 0.01)."""
    counts = torch.tensor(long_tail_counts(1000, 0.01, settings["num_classes"]))
    setup = build_training(run, counts, settings["in_channels"], settings["num_classes"], device,
                           compile_cache=compile_cache)
    setup.model.train()
    return setup


def bench_training(cfg: dict, settings: dict, device: torch.device, warmup: int, repeats: int,
                   rounds: int) -> dict:
    """Seconds per optimisation step and img/s of each method's real training step."""
    generator = torch.Generator().manual_seed(0)
    images, labels = _random_batch(settings, device, generator)
    steps = {}
    for method in PAPER_METHODS:
        run = _run_cfg(cfg, settings, method)
        setup = _training_setup(run, settings, device)
        step = run["train"]["warmup"]  # past the warm-up: the full learning rate
        steps[method] = lambda setup=setup, run=run: training_step(setup, images, labels, run, step)
    seconds = interleaved_seconds(steps, device, warmup, repeats, rounds)
    for method, value in seconds.items():
        log.info("train %s: %.4f s/step", method, value)
    return {method: {"seconds_per_step": value, "img_per_s": settings["batch_size"] / value}
            for method, value in seconds.items()}


class _PILImages(Dataset):
    """The naive input pipeline: PIL images, per-sample transforms in Python."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        mode = "L" if images.shape[1] == 1 else "RGB"
        self.images = [Image.fromarray(im.squeeze(0) if mode == "L" else im.transpose(1, 2, 0), mode)
                       for im in images]
        self.labels = labels
        self.transform = T.Compose([T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(0.5, 0.5)])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def bench_naive_training(cfg: dict, settings: dict, device: torch.device, warmup: int, repeats: int) -> dict:
    """The baseline loop: fp32, DataLoader over PIL images, Python-loop EMA, plain Adam, DDPM loss."""
    run = _run_cfg(cfg, settings, "ddpm")
    diffusion = Diffusion.from_config(run["diffusion"])
    model = build_unet(run["model"], settings["in_channels"], settings["num_classes"]).to(device).train()
    ema = copy.deepcopy(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=run["train"]["lr"], foreach=False)
    rng = np.random.default_rng(0)
    num_images = settings["batch_size"] * (warmup + repeats)
    shape = (num_images, settings["in_channels"], settings["image_size"], settings["image_size"])
    loader = iter(DataLoader(_PILImages(rng.integers(0, 256, shape, dtype=np.uint8),
                                        rng.integers(0, settings["num_classes"], num_images)),
                             batch_size=settings["batch_size"], shuffle=True, drop_last=True))
    decay = run["train"]["ema_decay"]

    def step():
        x0, y = next(loader)
        x0, y = x0.to(device), y.to(device)
        t = torch.randint(0, diffusion.T, (len(y),), device=device)
        noise = torch.randn_like(x0)
        loss = (model(diffusion.q_sample(x0, t, noise), t, y) - noise).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), run["train"]["grad_clip"])
        optimizer.step()
        model_state = model.state_dict()
        with torch.no_grad():
            for name, value in ema.state_dict().items():
                value.copy_(decay * value + (1 - decay) * model_state[name])
        loss.item()  # the usual per-step logging sync

    seconds = seconds_per_call(step, device, warmup, repeats)
    return {"seconds_per_step": seconds, "img_per_s": settings["batch_size"] / seconds}


def training_flops(cfg: dict, settings: dict, device: torch.device) -> float:
    """FLOPs of one DDPM optimisation step (forward + backward), counted by torch's FlopCounterMode."""
    run = _run_cfg(cfg, settings, "ddpm")
    counts = torch.ones(settings["num_classes"])
    setup = build_training(run, counts, settings["in_channels"], settings["num_classes"], device)
    images, labels = _random_batch(settings, device, torch.Generator().manual_seed(0))
    counter = FlopCounterMode(display=False)
    with counter:
        training_step(setup, images, labels, run, run["train"]["warmup"])
    return float(counter.get_total_flops())


def bench_sampling(cfg: dict, settings: dict, device: torch.device, probe_steps: int, rounds: int) -> dict:
    """img/s of DDPM-1000 and DDIM-100 with guidance batched vs two passes.

    The real sampler runs `probe_steps` denoising steps; the full schedules are extrapolated
    from the time per step (all steps of a schedule cost the same).
    """
    run = _run_cfg(cfg, settings, "ddpm")
    model = build_unet(run["model"], settings["in_channels"], settings["num_classes"]).to(device).eval()
    if settings["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    batch = settings["sample_batch_size"]
    labels = torch.arange(batch) % settings["num_classes"]
    shape = (settings["in_channels"], settings["image_size"], settings["image_size"])
    results = {}
    for sampler, full_steps in (("ddpm", 1000), ("ddim", 100)):
        diffusion = Diffusion(T=probe_steps) if sampler == "ddpm" else Diffusion.from_config(run["diffusion"])
        sample_cfg = dataclasses.replace(SampleConfig.of(settings["setting"]["sample"], "sample"), sampler=sampler, steps=probe_steps,
                                         eta=0.0, omega=1.0, bf16_autocast=settings["train"]["bf16_autocast"])
        passes = {batched: (lambda batched=batched: generate(model, diffusion, labels, torch.arange(batch),
                                                              sample_cfg, shape, batched))
                  for batched in (True, False)}
        seconds = interleaved_seconds(passes, device, 1, 1, rounds)
        for batched, value in seconds.items():
            per_step = value / probe_steps
            key = f"{sampler}{full_steps}_{'batched' if batched else 'two_pass'}"
            results[key] = {"seconds_per_denoising_step": per_step, "img_per_s": batch / (per_step * full_steps)}
            log.info("sample %s: %.4f s per step", key, per_step)
    return results


def bench_training_steps_compiled(cfg: dict, settings: dict, device: torch.device) -> dict:
    """Each method's training step (coral.step) eager vs compiled (train.compile): the graph breaks of its
    two compiled pieces (the loss with its backward, and the update) and the kernels one step launches
    each way. The methods share one Inductor cache, so the network compiles once."""
    generator = torch.Generator().manual_seed(0)
    images, labels = _random_batch(settings, device, generator)
    results = {}
    with tempfile.TemporaryDirectory(prefix="coral-bench-compile-") as cache:
        for method in NAMES:
            run = _run_cfg(cfg, settings, method)
            step = run["train"]["warmup"]
            setup = _training_setup(run, settings, device)
            batch = draw_batch(images, labels, setup.objective, setup.config, hflip=False)
            breaks = sum(graph_breaks(piece, *args) for piece, args in ((setup.loss, batch.inputs()), (setup.update, ())))
            kernels_eager = kernels_per_call(lambda: training_step(setup, images, labels, run, step), device)
            compiled_run = copy.deepcopy(run)
            compiled_run["train"]["compile"] = True
            compiled = _training_setup(compiled_run, settings, device, compile_cache=Path(cache))
            started = time.perf_counter()
            kernels_compiled = kernels_per_call(lambda: training_step(compiled, images, labels, compiled_run, step),
                                                device)
            results[method] = {"graph_breaks": breaks, "kernels_per_step_eager": kernels_eager,
                               "kernels_per_step_compiled": kernels_compiled,
                               "compile_seconds": time.perf_counter() - started}
            log.info("train %s compiled: %d graph breaks, %d kernels eager, %d compiled", method, breaks,
                     kernels_eager, kernels_compiled)
    return results


def bench_sampling_step(cfg: dict, settings: dict, device: torch.device, warmup: int, repeats: int,
                        rounds: int) -> dict:
    """The preset's sampler's guided denoising step (coral.sample.denoising_step) on the sampling batch,
    eager vs compiled (coral.compiled_step.CompiledStep: torch.compile, CUDA graphs on a GPU): graph
    breaks, kernels launched per step, seconds per step, and the first compiled calls' seconds."""
    run = _run_cfg(cfg, settings, "ddpm")
    model = build_unet(run["model"], settings["in_channels"], settings["num_classes"]).to(device).eval()
    if settings["train"]["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    diffusion = Diffusion.from_config(run["diffusion"]).to(device)
    sample_cfg = dataclasses.replace(SampleConfig.of(settings["setting"]["sample"], "sample"), omega=1.0,
                                     bf16_autocast=settings["train"]["bf16_autocast"])
    batch = settings["sample_batch_size"]
    generator = torch.Generator().manual_seed(0)
    shape = (batch, settings["in_channels"], settings["image_size"], settings["image_size"])
    t = torch.full((batch,), diffusion.T // 2, dtype=torch.long)
    inputs = [value.to(device) for value in (torch.randn(shape, generator=generator), t, t - 1,
                                               torch.arange(batch) % settings["num_classes"],
                                               torch.randn(shape, generator=generator))]
    eager = denoising_step(model, diffusion, sample_cfg)
    with torch.no_grad():
        breaks = graph_breaks(eager, *inputs)  # before compiling: explain resets torch.compile's caches
        compiled = CompiledStep(eager, batch, device)
        started = time.perf_counter()
        kernels_compiled = kernels_per_call(lambda: compiled(*inputs), device)
        compile_seconds = time.perf_counter() - started
        kernels_eager = kernels_per_call(lambda: eager(*inputs), device)
        seconds = interleaved_seconds({"eager": lambda: eager(*inputs), "compiled": lambda: compiled(*inputs)},
                                      device, warmup, repeats, rounds)
    log.info("sampling step: %d graph breaks, %d kernels eager, %d compiled, %.4f s eager, %.4f s compiled",
             breaks, kernels_eager, kernels_compiled, seconds["eager"], seconds["compiled"])
    return {"sampler": sample_cfg.sampler, "batch_size": batch, "cuda_graphs": compiled.cuda_graphs,
            "graph_breaks": breaks, "kernels_per_step_eager": kernels_eager,
            "kernels_per_step_compiled": kernels_compiled, "seconds_per_step_eager": seconds["eager"],
            "seconds_per_step_compiled": seconds["compiled"],
            "compiled_speedup": seconds["eager"] / seconds["compiled"], "compile_seconds": compile_seconds}


def bench_features(settings: dict, device: torch.device, num_images: int) -> dict:
    """img/s of the classifier feature extraction through torch-fidelity, and the metric computation time."""
    from coral.classifier import FEATURE_EXTRACTOR_NAME, SmallClassifier, save_classifier
    from coral.fidelity import compare_features, prd_scores
    from coral.metrics import extract_features

    classifier = SmallClassifier(settings["in_channels"], settings["num_classes"], width=32)
    shape = (num_images, settings["in_channels"], settings["image_size"], settings["image_size"])
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classifier.pt"
        save_classifier(path, classifier, settings["image_size"], [str(c) for c in range(settings["num_classes"])],
                        test_accuracy=0.0)
        start = time.perf_counter()
        features = extract_features(images, FEATURE_EXTRACTOR_NAME, ["penultimate"], str(path), 250,
                                    "benchmark")["penultimate"]
        extract_seconds = time.perf_counter() - start
    half = num_images // 2
    start = time.perf_counter()
    compare_features(features[:half], features[half:], kid_subsets=100, kid_subset_size=min(1000, half),
                     prc_neighborhood=5)
    compare_seconds = time.perf_counter() - start
    start = time.perf_counter()
    prd_scores(features[:half].numpy(), features[half:].numpy(), num_clusters=20 * settings["num_classes"],
               num_runs=1)
    prd_seconds = time.perf_counter() - start
    return {"feature_extraction_img_per_s": num_images / extract_seconds,
            "fid_kid_prc_seconds": compare_seconds, "prd_seconds_per_run": prd_seconds,
            "num_images": num_images}


def ratios(training: dict, naive: dict, sampling: dict) -> dict:
    ddpm = training["ddpm"]["seconds_per_step"]
    values = {
        "coral_over_ddpm_step": training["coral"]["seconds_per_step"] / ddpm,
        "t2h_over_ddpm_step": training["t2h"]["seconds_per_step"] / ddpm,
        "cbdm_over_ddpm_step": training["cbdm"]["seconds_per_step"] / ddpm,
        "batched_guidance_speedup": sampling["ddim100_batched"]["img_per_s"] / sampling["ddim100_two_pass"]["img_per_s"],
        "training_speedup_over_naive": naive["seconds_per_step"] / ddpm,
    }
    return {name: {"value": value, "target": f"{TARGETS[name][0]} {TARGETS[name][1]}",
                   "met": value <= TARGETS[name][1] if TARGETS[name][0] == "<=" else value >= TARGETS[name][1]}
            for name, value in values.items()}


def run_benchmark(raw: dict, preset: str, out_dir: str | Path, cpu_batch: int | None = None,
                  warmup: int = 2, repeats: int = 5, rounds: int = 5, probe_steps: int = 3,
                  feature_images: int = 4000) -> dict:
    """Measure everything at the sizes of one preset of the raw config `raw` (e.g. 'embedded' or 'paper');
    write <out_dir>/<preset>-<device>.json/.csv."""
    if probe_steps < 2:
        raise ValueError(f"probe_steps: {probe_steps}; allowed: 2 or more denoising steps")
    device = default_device()
    cfg, settings = bench_settings(raw, preset, device, cpu_batch)
    training = bench_training(cfg, settings, device, warmup, repeats, rounds)
    naive = bench_naive_training(cfg, settings, device, warmup, repeats * rounds)
    flops = training_flops(cfg, settings, device)
    sampling = bench_sampling(cfg, settings, device, probe_steps, rounds)
    sampling_step = bench_sampling_step(cfg, settings, device, warmup, repeats, rounds)
    training_compiled = bench_training_steps_compiled(cfg, settings, device)
    features = bench_features(settings, device, feature_images)
    achieved = flops / training["ddpm"]["seconds_per_step"]
    compute = {"flops_per_ddpm_step": flops, "achieved_flops_per_s": achieved}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = next((value for name, value in PEAK_BF16_FLOPS.items() if name in gpu), None)
    compute["mfu_vs_bf16_peak"] = achieved / peak if peak else None
    result = {"preset": preset, "machine": machine_description(device),
              "settings": {key: settings[key] for key in ("model", "image_size", "in_channels", "batch_size",
                                                            "sample_batch_size")},
              "train_settings": {key: settings["train"][key] for key in ("bf16_autocast", "channels_last", "compile")},
              "training": training, "training_compiled": training_compiled, "naive_training": naive,
              "sampling": sampling, "sampling_step": sampling_step,
              "features": features,
              "compute": compute, "ratios": ratios(training, naive, sampling), "provenance": provenance()}
    name = f"{preset}-{(gpu or 'cpu').replace(' ', '_')}"
    out_dir = Path(out_dir)
    write_json(out_dir / f"{name}.json", result)
    rows = [("ratio", key, value["value"], value["target"]) for key, value in result["ratios"].items()]
    rows += [("train_img_per_s", key, value["img_per_s"], "") for key, value in training.items()]
    rows += [("train_img_per_s", "naive", naive["img_per_s"], "")]
    rows += [("sample_img_per_s", key, value["img_per_s"], "") for key, value in sampling.items()]
    rows += [("sampling_step", key, value, "") for key, value in sampling_step.items()]
    rows += [("training_compiled", f"{method}_{key}", value, "") for method, figures in training_compiled.items()
             for key, value in figures.items()]
    rows += [("features", key, value, "") for key, value in features.items()]
    rows += [("compute", key, value, "") for key, value in compute.items()]
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        tmp.write_text("kind,name,value,target\n" + "".join(f"{k},{n},{v},{t}\n" for k, n, v, t in rows))
    return result
