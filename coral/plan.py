"""`python -m coral plan`: what a target costs before a GPU-hour is spent, and the SLURM resources
of every job.

Each job is costed from the network's FLOP count (torch's FlopCounterMode on the 'meta' device: no
memory, no compute), the preset's sizes (steps, batch, image size per setting, samples, sampler steps,
guidance) and a throughput figure: the GPU's benchmark (benchmarks/results/gpu_check-<GPU>.json) when
there is one, otherwise a stated assumption. The same costs size the jobs' SLURM resources
(workflow/rules/common.smk), capped by the partition's time limit `cluster.max_runtime_min`: a train or
sample run that needs longer spans several jobs (each saves its state and exits with code 75 before the
limit) and its rule gets that many attempts plus `cluster.spare_attempts`.

The jobs of a target come from Snakemake's own dry run in an empty folder, with empty stand-ins for the
dataset files (a dry run reads none): the plan is the DAG that a fresh run executes.
"""
from __future__ import annotations

import copy
import functools
import json
import math
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from coral import config as config_module
from coral.config import ConfigError
from coral.sections import LATENT_INPUTS
from coral.sources import BALANCED_PER_CLASS, IN_CHANNELS, NATURALLY_LONG_TAILED, NUM_CLASSES, dataset_files

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
BENCHMARK_DIR = REPO / "benchmarks" / "results"
DEFAULT_TARGET = "results/tables/main.csv"
GPU_RULES = ("train_classifier", "train", "sample", "reference_features", "evaluate", "latent")
RESUMABLE_RULES = ("train", "sample")  # save their state and exit with code 75 before the time limit
GB = 1e9

# ---------------------------------------------------------------- stated assumptions
# Used where nothing was measured; `coral plan` prints the ones a plan relies on.
# achieved FLOP/s over the GPU's dense bf16 peak, without a benchmark (an H100 reached 6-14% at paper sizes)
ASSUMED_MFU = {"fp32": 0.07, "bf16": 0.10}
CPU_FLOPS_PER_CORE = 20e9            # BLAS work of the metrics left on the CPU (KID's kernels)
JPEG_SECONDS = 0.01                  # decoding, cropping and resizing one CelebA / ImageNet JPEG, one core
ARRAY_SECONDS = 1e-4                 # reading and resizing one image of an array dataset (CIFAR, animals)
TSNE_SECONDS_PER_POINT = 0.005       # sklearn's Barnes-Hut t-SNE, one core
INCEPTION_FLOPS = 11.4e9             # Inception-v3 at 299x299: 5.7G multiply-adds per image (Szegedy et al. 2016)
INCEPTION_LIVE_BYTES = 20e6          # its live activations per image of a batch
START_SECONDS = {"gpu": 120, "cpu": 30}  # imports, CUDA start-up, reading inputs, resuming a checkpoint
HOST_BASE_GB = {"gpu": 4.0, "cpu": 1.0}  # resident size of a job's Python, torch (and CUDA) before its data
CUDA_CONTEXT_GB = 1.0                # GPU memory of the CUDA context and cuDNN workspaces, beyond torch's allocations
BF16_ACTIVATION_FACTOR = 0.9         # activation bytes under bf16 autocast over fp32 (an H100 measured 0.85-0.88:
                                     # GroupNorm and SiLU stay fp32)
LIGHT_JOB_SECONDS = 10               # tables and figures
RUNTIME_SAFETY = 1.5                 # a job asks for this multiple of its estimated wall time ...
MIN_RUNTIME_MIN = 10                 # ... and at least this many minutes
CPU_SECONDS_PER_CORE = 600           # CPU-bound work gets a core per 10 minutes of it, up to cluster.max_cpus
PRD_KMEANS_BATCH = 2048              # coral.metrics._KMEANS_BATCH: points of one mini-batch k-means step
PRC_ROWS = 2048                      # coral.metrics._PRC_BATCH_SIZE: rows of a distance block

# ---------------------------------------------------------------- dataset sizes
# Images per class of the balanced sources (the reference set is all of them, the split takes
# long_tail_counts of them) and images of the long-tailed-as-published ones. CelebA-5: upper bounds,
# CelebA's training partition (its five-hair-colour subset is smaller).
PUBLISHED_IMAGES = {"celeba5": {"train": 162_770, "reference": 162_770},
                    "imagenet_lt": {"train": 115_846, "reference": 50_000}}
def image_count(data: dict, part: str) -> int:
    """Images of a dataset's long-tailed split (part 'train') or its reference set."""
    from coral.longtail import long_tail_counts
    dataset = data["dataset"]
    if dataset in BALANCED_PER_CLASS:
        per_class, classes = BALANCED_PER_CLASS[dataset], NUM_CLASSES[dataset]
        if part == "train" and data.get("rho") is not None:
            return sum(long_tail_counts(per_class, data["rho"], classes))
        return per_class * classes
    if dataset in PUBLISHED_IMAGES:
        return PUBLISHED_IMAGES[dataset][part]
    raise ConfigError(f"data.settings: dataset {dataset!r} has no image count in coral/plan.py; "
                      f"allowed: {', '.join([*BALANCED_PER_CLASS, *PUBLISHED_IMAGES])}")


def image_bytes(data: dict) -> int:
    return IN_CHANNELS[data["dataset"]] * data["image_size"] ** 2


# ---------------------------------------------------------------- FLOPs and memory on the meta device

def _cdist_flops(x1_shape, x2_shape, *args, out_shape=None, **kwargs) -> int:
    """torch.cdist (p=2), T2H's posterior: a difference, a square and a sum per pair and feature."""
    return 3 * math.prod(out_shape) * x1_shape[-1]


def _flop_counter():
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten._cdist_forward: _cdist_flops})


def _live_bytes():
    """A dispatch mode that tracks the bytes of live tensors (each op's fresh outputs until they are
    freed) and their peak: the activation memory of a forward pass without autograd."""
    import weakref
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        live = peak = 0

        def _free(self, nbytes):
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not any(r.alias_info is not None for r in func._schema.returns):  # views allocate nothing
                for tensor in tree_flatten(out)[0]:
                    if isinstance(tensor, torch.Tensor):
                        nbytes = tensor.untyped_storage().nbytes()
                        self.live += nbytes
                        weakref.finalize(tensor, self._free, nbytes)
                self.peak = max(self.peak, self.live)
            return out

    return LiveBytes()


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def _unet(model_json: str, channels: int, num_classes: int):
    """The UNet of a model config on the meta device (weights without memory)."""
    import torch
    from coral.unet import build_unet
    with torch.device("meta"):
        return build_unet(json.loads(model_json), channels, num_classes)


def _objective(model, run: dict):
    """A run's objective on the meta device, around `model`."""
    import torch
    from coral.diffusion import Diffusion
    from coral.objectives import build_objective
    meta = torch.device("meta")
    with meta:
        diffusion = Diffusion.from_config(run["diffusion"]).to(meta)
        return build_objective(run["objective"]["name"], run["objective"]["hparams"], diffusion,
                               torch.ones(model.class_embedding.num_embeddings), model)


def parameter_bytes(run: dict, channels: int, num_classes: int) -> tuple[int, int]:
    """Parameter bytes of a run's UNet and of its objective (CORAL's projection head)."""
    model = _unet(json.dumps(run["model"]), channels, num_classes)
    return _param_bytes(model), _param_bytes(_objective(model, run))


_STEPS: dict = {}


def training_step(run: dict, channels: int, num_classes: int) -> dict:
    """One optimisation step of a run on the meta device: FLOPs of the objective's forward and backward
    and the bytes it saves for the backward (parameters excluded). Counted once per network, objective
    and integer hyperparameter (sizes such as proj_dim): temperatures and weights change neither."""
    import torch
    objective = run["objective"]
    structure = {k: v for k, v in objective["hparams"].items() if type(v) is int}
    key = json.dumps([run["model"], objective["name"], structure, run["data"]["image_size"], channels,
                      run["train"]["batch_size"]], sort_keys=True)
    if key not in _STEPS:
        model = _unet(json.dumps(run["model"]), channels, num_classes).train()
        loss = _objective(model, run)
        batch, size = run["train"]["batch_size"], run["data"]["image_size"]
        parameters = {id(p) for p in [*model.parameters(), *loss.parameters()]}
        saved = {}

        def pack(tensor):
            if id(tensor) not in parameters:
                saved[id(tensor)] = tensor
            return tensor

        with torch.device("meta"):
            x0, y = torch.zeros(batch, channels, size, size), torch.zeros(batch, dtype=torch.long)
            counter = _flop_counter()
            with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                noise = torch.zeros_like(x0)
                loss(model, x0, y, y, y, noise, **loss.draw(x0, y, y, y, noise))["loss"].backward()
        _STEPS[key] = {"flops": counter.get_total_flops(),
                       "saved_bytes": sum(t.numel() * t.element_size() for t in saved.values())}
    return _STEPS[key]


@functools.lru_cache(maxsize=None)
def unet_forward(model_json: str, image_size: int, channels: int, batch: int) -> dict:
    """One forward pass of the UNet without autograd on the meta device: FLOPs per image and the peak
    of live activation bytes at this batch."""
    import torch
    with torch.device("meta"), torch.no_grad():
        model = _unet(model_json, channels, 1).eval()
        with _flop_counter() as counter, _live_bytes() as live:
            x, t = torch.zeros(batch, channels, image_size, image_size), torch.zeros(batch, dtype=torch.long)
            model(x, t, t)
    return {"flops_per_image": counter.get_total_flops() / batch, "live_bytes": live.peak}


@functools.lru_cache(maxsize=None)
def _classifier(channels: int, num_classes: int, width: int, image_size: int, batch: int) -> dict:
    """The evaluation classifier on the meta device: FLOPs per image of a training step (forward and
    backward) and of a forward pass, bytes saved for the backward, parameter bytes, feature size."""
    import torch
    import torch.nn.functional as F
    from coral.classifier import SmallClassifier

    with torch.device("meta"):
        model = SmallClassifier(channels, num_classes, width)
        x = torch.zeros(batch, channels, image_size, image_size)
        with torch.no_grad(), _flop_counter() as forward:
            model(x)
        parameters, saved = {id(p) for p in model.parameters()}, {}

        def pack(tensor):
            if id(tensor) not in parameters:
                saved[id(tensor)] = tensor.numel() * tensor.element_size()
            return tensor

        with _flop_counter() as step, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return {"train_flops_per_image": step.get_total_flops() / batch,
            "forward_flops_per_image": forward.get_total_flops() / batch,
            "saved_bytes": sum(saved.values()), "model_bytes": _param_bytes(model), "feature_dim": model.feature_dim}


# ---------------------------------------------------------------- the GPU benchmark

def benchmark_path(gpu: str, folder: Path = BENCHMARK_DIR) -> Path:
    return Path(folder) / f"gpu_check-{gpu.replace(' ', '_')}.json"


ENTRY_KEYS = {"training": ("image_size", "dtype", "layout", "batch_size", "ms_per_step"),
              "sampling": ("image_size", "dtype", "layout", "batch_size", "ms_per_denoising_step")}


def read_benchmark(path: Path) -> dict | None:
    """The GPU check's JSON at `path` (None when there is none), its entries checked."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"cluster.gpu: {path} is not valid JSON ({err}); rerun the GPU check or remove it") from None
    for phase, keys in ENTRY_KEYS.items():
        entries = data.get(phase) if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"cluster.gpu: {path} has no '{phase}' entries; expected a list of {', '.join(keys)}")
        for i, entry in enumerate(entries):
            missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
            if missing:
                raise ConfigError(f"cluster.gpu: {path} {phase}[{i}] lacks {', '.join(missing)}")
    return data


def pick_entry(entries: list[dict], want: dict) -> tuple[dict, list[str]]:
    """The entry matching `want` (dtype, layout, image_size, batch_size and, where given, objective or
    guided), else the nearest: the same precision and layout first, then the closest image size,
    objective, guidance and batch. Returns the entry and how it differs from `want`."""
    def distance(entry):
        return ((entry["dtype"] != want["dtype"]) + (entry["layout"] != want["layout"]),
                abs(math.log2(entry["image_size"] / want["image_size"])),
                "objective" in want and entry.get("objective") != want["objective"],
                "guided" in want and entry.get("guided", True) != want["guided"],
                abs(math.log2(entry["batch_size"] / want["batch_size"])))

    best = min(entries, key=distance)
    return best, [f"{key} {best.get(key)} instead of {value}" for key, value in want.items() if best.get(key) != value]


def _describe_entry(entry: dict) -> str:
    words = [f"{entry['image_size']} px", entry["dtype"], entry["layout"], f"batch {entry['batch_size']}"]
    return " ".join(words + ([entry["objective"]] if "objective" in entry else [])
                    + (["guided"] if entry.get("guided") else []))


# ---------------------------------------------------------------- costs of jobs

@dataclass(frozen=True)
class JobCost:
    """What one job needs: device work, CPU work, memory and disk, and where its figures came from."""

    rule: str
    gpu: bool
    gpu_seconds: float = 0.0           # on the GPU, without start-up
    cpu_seconds: float = 0.0           # CPU-bound work on one core
    cpus: int = 1
    gpu_memory_gb: float = 0.0
    host_memory_gb: float = 1.0
    disk_gb: float = 0.0
    sources: tuple[str, ...] = field(default=(), compare=False)

    @property
    def work_seconds(self) -> float:
        return self.gpu_seconds + self.cpu_seconds / self.cpus

    @property
    def start_seconds(self) -> float:
        return START_SECONDS["gpu" if self.gpu else "cpu"]


class CostModel:
    """Costs and SLURM resources of the jobs of one resolved config (see the module docstring)."""

    def __init__(self, cfg: dict, benchmarks: Path = BENCHMARK_DIR):
        self.cfg = cfg
        self.cluster = cfg["cluster"]
        self.benchmark_file = benchmark_path(self.cluster["gpu"], benchmarks)
        self.benchmark = read_benchmark(self.benchmark_file)
        if self.benchmark is None:
            self.peak_flops = self._assumed_peak()

    def _assumed_peak(self) -> float:
        from coral.bench import PEAK_BF16_FLOPS
        gpu = self.cluster["gpu"]
        peak = next((value for name, value in PEAK_BF16_FLOPS.items() if name in gpu), None)
        if peak is None:
            raise ConfigError(f"cluster.gpu: {gpu!r} has no benchmark ({self.benchmark_file}) and no known peak; "
                              f"allowed: a GPU whose name contains {', '.join(PEAK_BF16_FLOPS)}, or run the GPU check")
        return peak

    # ---------------------------------------------------------- throughput

    def _want(self, phase: str, run: dict, image_size: int, batch: int, **extra) -> dict:
        """The benchmark entry a job of `phase` runs like: the precision and layout of its own config
        (dataset_overrides included), `run` a setting's config or a run config."""
        bf16 = run["train" if phase == "training" else "sample"]["bf16_autocast"]
        layout = "channels_last" if run["train"]["channels_last"] else "nchw"
        return {"image_size": image_size, "dtype": "bf16" if bf16 else "fp32", "layout": layout,
                "batch_size": batch, **extra}

    def _entry(self, phase: str, want: dict) -> tuple[dict, str, bool]:
        """The benchmark entry for `want`, where the figure comes from, and whether it is exactly this job."""
        entry, differences = pick_entry(self.benchmark[phase], want)
        nearest = f" (nearest: {'; '.join(differences)})" if differences else ""
        return entry, f"{self.benchmark_file.name} {phase} [{_describe_entry(entry)}{nearest}]", not differences

    def _assumed(self, want: dict) -> tuple[float, str]:
        mfu = ASSUMED_MFU[want["dtype"]]
        return mfu * self.peak_flops, (f"assumed {mfu:.0%} of the {self.peak_flops / 1e12:.0f} TFLOP/s bf16 peak of "
                                       f"{self.cluster['gpu']} ({want['dtype']}; no {self.benchmark_file.name})")

    def training_rate(self, want: dict) -> tuple[float, str, dict | None]:
        """Achieved FLOP/s of a training step like `want`, its source, and the entry when it is exactly `want`."""
        if self.benchmark is None:
            return (*self._assumed(want), None)
        entry, source, exact = self._entry("training", want)
        rate = entry["tflops"] * 1e12 if "tflops" in entry else entry["flops_per_step"] / (entry["ms_per_step"] / 1e3)
        return rate, source, entry if exact else None

    def inference_rate(self, want: dict, flops_per_image: float) -> tuple[float, str, dict | None]:
        """Achieved FLOP/s of the guided denoising step of a network costing `flops_per_image` at want's
        image size: the entry's measured time over that network's FLOPs (scaled by pixels from the
        entry's size), or the assumption; and the entry when it is exactly `want`."""
        if self.benchmark is None:
            return (*self._assumed(want), None)
        entry, source, exact = self._entry("sampling", want)
        images = entry["batch_size"] * (2 if entry.get("guided", True) else 1)
        flops = flops_per_image * (entry["image_size"] / want["image_size"]) ** 2 * images
        return flops / (entry["ms_per_denoising_step"] / 1e3), source, entry if exact else None

    # ---------------------------------------------------------- jobs

    def cost(self, rule: str, wildcards: dict) -> JobCost:
        """The cost of one job of `rule` with these wildcards; rules without a model are light jobs."""
        return self._cost(rule, tuple(sorted(wildcards.items())))

    @functools.lru_cache(maxsize=None)
    def _cost(self, rule: str, wildcards: tuple) -> JobCost:
        w = dict(wildcards)
        if rule == "subsample":
            return self._decode("subsample", config_module.setting_config(self.cfg, w["setting"])["data"], "train")
        if rule == "reference":
            return self._decode("reference", config_module.dataset_config(self.cfg, w["dataset"]), "reference")
        if rule == "train_classifier":
            return self._train_classifier(w["dataset"])
        if rule == "train":
            return self._train(w["setting"], w["variant"])
        if rule == "sample":
            omega = w.get("omega") or config_module.omega_of(config_module.setting_config(self.cfg, w["setting"])["sample"],
                                                             config_module.variants(self.cfg)[w["variant"]][0])
            return self._sample(w["setting"], w["variant"], float(omega))
        if rule == "reference_features":
            return self._reference_features(w["dataset"])
        if rule == "evaluate":
            return self._evaluate(w["setting"])
        if rule == "latent":
            return self._latent(w["setting"], w["variant"])
        return JobCost(rule, gpu=False, cpu_seconds=LIGHT_JOB_SECONDS, host_memory_gb=HOST_BASE_GB["cpu"],
                       sources=("tables, figures and unmodelled rules: a light CPU job",))

    def _job(self, rule: str, **figures) -> JobCost:
        """A JobCost whose CPU work gets a core per CPU_SECONDS_PER_CORE, up to cluster.max_cpus."""
        cpus = min(self.cluster["max_cpus"], max(1, math.ceil(figures.get("cpu_seconds", 0) / CPU_SECONDS_PER_CORE)))
        return JobCost(rule, gpu=rule in GPU_RULES, cpus=cpus, **figures)

    def _decode(self, rule: str, data: dict, part: str) -> JobCost:
        images = image_count(data, part)
        jpeg = data["dataset"] in NATURALLY_LONG_TAILED
        stored = images * (image_bytes(data) + 16)  # uint8 images, int64 labels (and indices)
        return self._job(rule, cpu_seconds=images * (JPEG_SECONDS if jpeg else ARRAY_SECONDS),
                         host_memory_gb=HOST_BASE_GB["cpu"] + 2 * stored / GB, disk_gb=stored / GB,
                         sources=(f"{rule}: {'JPEG decoding' if jpeg else 'array reading'} at an assumed "
                                  f"{JPEG_SECONDS if jpeg else ARRAY_SECONDS} s per image and core",))

    def _train_classifier(self, dataset: str) -> JobCost:
        data = config_module.dataset_config(self.cfg, dataset)
        clf = config_module.dataset_section(self.cfg, dataset, "classifier")
        net = _classifier(IN_CHANNELS[dataset], NUM_CLASSES[dataset], clf["width"], data["image_size"],
                          clf["batch_size"])
        fp32 = {"train": {"bf16_autocast": False, "channels_last": False}}  # the classifier trains in fp32, NCHW
        rate, source, _ = self.training_rate(self._want("training", fp32, data["image_size"], clf["batch_size"],
                                                        objective="ddpm"))
        states = 4 * net["model_bytes"]  # weights, gradients, two Adam moments
        return self._job("train_classifier",
                         gpu_seconds=clf["steps"] * clf["batch_size"] * net["train_flops_per_image"] / rate,
                         gpu_memory_gb=CUDA_CONTEXT_GB + (states + net["saved_bytes"]) / GB,
                         host_memory_gb=HOST_BASE_GB["gpu"] + image_count(data, "reference") * image_bytes(data) / GB,
                         disk_gb=states / GB, sources=(f"classifier at the UNet's training FLOP/s: {source}",))

    def _run(self, setting: str, variant: str) -> dict:
        return config_module.run_config(self.cfg, setting, variant, 0)

    def _train(self, setting: str, variant: str) -> JobCost:
        """Measured step time and memory when the benchmark has this exact step; otherwise the step's
        FLOPs at the nearest entry's FLOP/s, and parameters, optimiser states and saved activations."""
        run = self._run(setting, variant)
        data, train = run["data"], run["train"]
        channels, classes = IN_CHANNELS[data["dataset"]], NUM_CLASSES[data["dataset"]]
        rate, source, exact = self.training_rate(self._want("training", run, data["image_size"], train["batch_size"],
                                                            objective=run["objective"]["name"]))
        model, extra = parameter_bytes(run, channels, classes)
        if exact:
            seconds, memory = exact["ms_per_step"] / 1e3, exact.get("peak_memory_gb")
            memory = memory and memory + CUDA_CONTEXT_GB
        else:
            step = training_step(run, channels, classes)
            seconds, memory = step["flops"] / rate, None
        if memory is None:
            states = 4 * (model + extra) + model  # weights, gradients, two Adam moments; the EMA copy
            saved = training_step(run, channels, classes)["saved_bytes"]
            memory = CUDA_CONTEXT_GB + (states + saved * (BF16_ACTIVATION_FACTOR if train["bf16_autocast"] else 1)) / GB
        checkpoint = 4 * model + 3 * extra  # weights, EMA, objective and their Adam moments
        return self._job(
            "train", gpu_seconds=train["steps"] * seconds, gpu_memory_gb=memory,
            host_memory_gb=HOST_BASE_GB["gpu"] + (image_count(data, "train") * image_bytes(data) + checkpoint) / GB,
            disk_gb=(train["keep_checkpoints"] * checkpoint + 2 * model + extra) / GB,
            sources=(f"train: {'measured step' if exact else 'FLOPs at'} {source}",))

    def _sample(self, setting: str, variant: str, omega: float) -> JobCost:
        run, sample = self._run(setting, variant), config_module.setting_config(self.cfg, setting)["sample"]
        data, layout = run["data"], {"train": run["train"], "sample": sample}
        size, batch, channels = data["image_size"], sample["batch_size"], IN_CHANNELS[data["dataset"]]
        images = batch * (2 if omega != 0 else 1)  # guidance: one forward of the doubled batch
        net = unet_forward(json.dumps(run["model"]), size, channels, images)
        rate, source, exact = self.inference_rate(self._want("sampling", layout, size, batch, guided=omega != 0),
                                                  net["flops_per_image"])
        steps = run["diffusion"]["T"] if sample["sampler"] == "ddpm" else sample["steps"]
        model, _ = parameter_bytes(run, channels, NUM_CLASSES[data["dataset"]])
        live = net["live_bytes"] * (BF16_ACTIVATION_FACTOR if sample["bf16_autocast"] else 1)
        memory = exact.get("peak_memory_gb") if exact else None
        memory = memory and memory + CUDA_CONTEXT_GB
        stored = sample["num_samples"] * image_bytes(data)
        return self._job(
            "sample", gpu_seconds=sample["num_samples"] / batch * steps * images * net["flops_per_image"] / rate,
            gpu_memory_gb=memory or CUDA_CONTEXT_GB + (model + live) / GB,
            host_memory_gb=HOST_BASE_GB["gpu"] + (2 * stored + 2 * model) / GB, disk_gb=stored / GB,
            sources=(f"sample: {'measured step' if exact else 'FLOPs at'} {source}",))

    def _feature_network(self, setting: str) -> dict:
        """The evaluation's feature network of a setting: FLOPs per image (with the classifier's logits
        beside Inception's features), feature dims, live batch bytes, and the inference rate."""
        scfg = config_module.setting_config(self.cfg, setting)
        data, ev, clf = scfg["data"], scfg["evaluate"], scfg["classifier"]
        classes, channels, size = NUM_CLASSES[data["dataset"]], IN_CHANNELS[data["dataset"]], data["image_size"]
        classifier = _classifier(channels, classes, clf["width"], size, ev["batch_size"])
        if ev["feature_extractor"] == "inception-v3-compat":
            net = {"flops_per_image": INCEPTION_FLOPS + classifier["forward_flops_per_image"], "dim": 2048,
                   "batch_bytes": ev["batch_size"] * INCEPTION_LIVE_BYTES}
        else:
            net = {"flops_per_image": classifier["forward_flops_per_image"], "dim": classifier["feature_dim"],
                   "batch_bytes": 0}
        unet = unet_forward(json.dumps(scfg["model"]), size, channels, 1)
        net["rate"], net["source"], _ = self.inference_rate(
            self._want("sampling", scfg, size, scfg["sample"]["batch_size"], guided=True), unet["flops_per_image"])
        return net

    def _reference_features(self, dataset: str) -> JobCost:
        setting = next(name for name, s in config_module.settings(self.cfg).items() if s["dataset"] == dataset)
        data = config_module.setting_config(self.cfg, setting)["data"]
        net, real = self._feature_network(setting), image_count(data, "reference")
        features = real * net["dim"] * 4
        return self._job(
            "reference_features", gpu_seconds=real * net["flops_per_image"] / net["rate"],
            gpu_memory_gb=CUDA_CONTEXT_GB + net["batch_bytes"] / GB,
            host_memory_gb=HOST_BASE_GB["gpu"] + (real * image_bytes(data) + features) / GB, disk_gb=features / GB,
            sources=(f"reference_features: feature networks at the UNet's inference FLOP/s, {net['source']}",))

    def _evaluate(self, setting: str) -> JobCost:
        """Features of the samples, then every metric on the job's GPU (coral.metrics uses it where there
        is one) except KID (torch-fidelity, on the CPU)."""
        scfg = config_module.setting_config(self.cfg, setting)
        data, ev = scfg["data"], scfg["evaluate"]
        classes = NUM_CLASSES[data["dataset"]]
        generated, real = scfg["sample"]["num_samples"], image_count(data, "reference")
        net, n = self._feature_network(setting), generated + real
        dim = net["dim"]
        prc_flops = 2 * dim * n ** 2 * (1 + 1 / classes)  # k-NN distances, overall and per class
        fid_flops = (classes + 1) * 25 * dim ** 3 + 4 * n * dim ** 2  # matrix square roots (~25 d^3), covariances
        # PRD, per run: k-means++ seeding on a sample (its Gram matrix), mini-batch steps, the last assignment
        clusters = min(ev["prd_clusters_per_class"] * classes, ev["prd_max_clusters"], n)
        seeding = min(n, max(3 * clusters, PRD_KMEANS_BATCH))
        prd_flops = ev["prd_runs"] * 2 * dim * (seeding ** 2 + (ev["prd_kmeans_steps"] * PRD_KMEANS_BATCH + n) * clusters)

        def kid(m):
            return ev["kid_subsets"] * 6 * min(ev["kid_subset_size"], m) ** 2 * dim

        features = n * dim * 4
        return self._job(
            "evaluate", gpu_seconds=(generated * net["flops_per_image"] + prc_flops + fid_flops + prd_flops) / net["rate"],
            cpu_seconds=(kid(min(generated, real)) + classes * kid(min(generated, real) // classes)) / CPU_FLOPS_PER_CORE,
            gpu_memory_gb=CUDA_CONTEXT_GB + (features + 2 * PRC_ROWS * n * 4 + seeding ** 2 * 4 + net["batch_bytes"]) / GB,
            host_memory_gb=HOST_BASE_GB["gpu"] + (generated * image_bytes(data) + 3 * features + PRC_ROWS * n * 4) / GB,
            disk_gb=(classes + 1) * 1e3 / GB,
            sources=(f"evaluate: feature networks and metrics at the UNet's inference FLOP/s, {net['source']}",
                     f"evaluate: KID on the CPU at an assumed {CPU_FLOPS_PER_CORE / 1e9:.0f} GFLOP/s per core"))

    def _latent(self, setting: str, variant: str) -> JobCost:
        run, latent = self._run(setting, variant), config_module.setting_config(self.cfg, setting)["latent"]
        data = run["data"]
        classes, channels = NUM_CLASSES[data["dataset"]], IN_CHANNELS[data["dataset"]]
        points = min(latent["per_class"] * classes, image_count(data, "reference"))
        net = unet_forward(json.dumps(run["model"]), data["image_size"], channels, latent["batch_size"])
        rate, source, _ = self.inference_rate(self._want("sampling", config_module.setting_config(self.cfg, setting),
                                                         data["image_size"], latent["batch_size"], guided=False),
                                              net["flops_per_image"])
        model, _ = parameter_bytes(run, channels, classes)
        bottleneck = run["model"]["ch"] * run["model"]["ch_mult"][-1]
        return self._job(
            "latent", gpu_seconds=len(LATENT_INPUTS) * points * net["flops_per_image"] / rate,
            cpu_seconds=points * TSNE_SECONDS_PER_POINT,
            gpu_memory_gb=CUDA_CONTEXT_GB + (model + net["live_bytes"]) / GB,
            host_memory_gb=HOST_BASE_GB["gpu"] + image_count(data, "reference") * image_bytes(data) / GB,
            disk_gb=points * bottleneck * 4 / GB,
            sources=(f"latent: FLOPs at {source}", f"latent: t-SNE at an assumed {TSNE_SECONDS_PER_POINT} s per point"))

    # ---------------------------------------------------------- SLURM

    def jobs_per_run(self, cost: JobCost) -> int:
        """SLURM jobs one run needs at the partition's time limit (only train and sample can resume)."""
        if cost.rule not in RESUMABLE_RULES:
            return 1
        usable = max(60.0, self.cluster["max_runtime_min"] * 60 - cost.start_seconds)  # a minute at least
        return max(1, math.ceil(cost.work_seconds / usable))

    def wall_seconds(self, cost: JobCost) -> float:
        """Wall time of one run of the job, over all its SLURM jobs."""
        return self.jobs_per_run(cost) * cost.start_seconds + cost.work_seconds

    def fits(self, cost: JobCost) -> bool:
        return self.wall_seconds(cost) <= self.jobs_per_run(cost) * self.cluster["max_runtime_min"] * 60

    def resources(self, rule: str, wildcards: dict, attempt: int = 1) -> dict:
        """SLURM resources of one attempt. The planned attempts ask for the estimate (the time limit when
        the run spans several jobs); each spare attempt after them asks for one more multiple of it,
        never beyond cluster.max_runtime_min and cluster.max_mem_gb."""
        cost = self.cost(rule, wildcards)
        cap, jobs = self.cluster["max_runtime_min"], self.jobs_per_run(cost)
        growth = max(1, attempt - jobs + 1)
        estimate = max(MIN_RUNTIME_MIN, math.ceil(self.wall_seconds(cost) / jobs / 60 * RUNTIME_SAFETY))
        resources = {"runtime": cap if jobs > 1 else min(cap, estimate * growth),
                     "mem_mb": math.ceil(min(self.cluster["max_mem_gb"], cost.host_memory_gb * growth) * 1024),
                     "cpus_per_task": cost.cpus}
        if cost.gpu:
            resources["gpu_mem_gb"] = math.ceil(cost.gpu_memory_gb)
        return resources

    def attempts(self, cost: JobCost) -> int:
        return self.jobs_per_run(cost) + self.cluster["spare_attempts"]

    def retries(self, rule: str) -> int:
        """The `retries:` of a resumable rule: its longest job's attempts minus one. Jobs: every setting x
        method, and the ablation setting x every run variant (sampled with guidance, the dearer case)."""
        cfg = self.cfg
        pairs = {(setting, method) for setting in config_module.settings(cfg) for method in cfg["methods"]}
        pairs |= {(config_module.ablation_setting(cfg), variant) for variant in config_module.variants(cfg)}
        omega = {"omega": "1.0"}  # guided: two forwards per step
        return max(self.attempts(self.cost(rule, {"setting": s, "variant": v, **omega})) for s, v in pairs) - 1


# ---------------------------------------------------------------- the jobs of a target

def resolve_unchecked(raw: dict, preset: str | None = None) -> dict:
    """The config with `preset` merged in and validated, without checking that the datasets are on disk."""
    return config_module.preset_config(raw, preset or raw.get("preset", "embedded"))


def stand_in_config(cfg: dict, folder: Path) -> dict:
    """A copy of a resolved config whose datasets and Inception weights are empty files under `folder`
    (created here), as its only preset: what a dry run needs, never read."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["data_root"] = str(folder / "data")
    for override in cfg["dataset_overrides"].values():
        override.get("data", {}).pop("data_root", None)
    cfg["evaluate"]["inception_weights_path"] = str(folder / "inception-weights.pth")
    cfg["presets"] = {cfg["preset"]: {}}
    paths = [Path(cfg["evaluate"]["inception_weights_path"])]
    for name in config_module.settings(cfg):
        paths += dataset_files(config_module.setting_config(cfg, name)["data"])
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return cfg


def parse_dry_run(text: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of each job in the output of `snakemake -n`."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        match = re.match(r"(?:local)?rule (\w+):", block)
        if match:
            line = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
            wildcards = dict(item.split("=", 1) for item in line.group(1).split(", ")) if line else {}
            jobs.append((match.group(1), wildcards))
    return jobs


def dag_jobs(cfg: dict, targets: list[str]) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job Snakemake's dry run plans for `targets` in an empty folder."""
    with tempfile.TemporaryDirectory(prefix="coral-plan-") as tmp:
        folder = Path(tmp)
        configfile = folder / "config.yaml"
        configfile.write_text(yaml.safe_dump(stand_in_config(cfg, folder)))
        result = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(folder / "work"),
                                 "--configfile", str(configfile), "-n", *targets],
                                capture_output=True, text=True)
    output = result.stdout + result.stderr
    jobs = parse_dry_run(output)
    stats = re.search(r"^total\s+(\d+)$", output, re.MULTILINE)
    if result.returncode or not stats or int(stats.group(1)) != len(jobs):
        raise ConfigError(f"targets: Snakemake's dry run of {' '.join(targets)} failed or could not be read: "
                          + " | ".join(output.strip().splitlines()[-5:]))
    return jobs


# ---------------------------------------------------------------- the report

def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _span(values, fmt) -> str:
    low, high = min(values), max(values)
    return fmt(high) if fmt(low) == fmt(high) else f"{fmt(low)}-{fmt(high)}"


def plan_rows(model: CostModel, jobs: list[tuple[str, dict]]) -> list[dict]:
    """One row per rule, in the order of the dry run: its jobs' costs and resources."""
    by_rule: dict[str, list[dict]] = {}
    for rule, wildcards in jobs:
        by_rule.setdefault(rule, []).append(wildcards)
    rows = []
    for rule, wildcard_list in by_rule.items():
        costs = [model.cost(rule, w) for w in wildcard_list]
        asks = [model.resources(rule, w) for w in wildcard_list]
        walls = [model.wall_seconds(c) for c in costs]
        rows.append({"rule": rule, "jobs": len(costs), "gpu": costs[0].gpu, "costs": costs, "asks": asks,
                     "wall": walls, "gpu_hours": [w / 3600 if c.gpu else 0.0 for w, c in zip(walls, costs)],
                     "attempts": [model.attempts(c) for c in costs] if rule in RESUMABLE_RULES else None})
    return rows


def format_plan(model: CostModel, rows: list[dict], header: str) -> str:
    columns = ["rule", "jobs", "GPU-h/job", "GPU-h", "GPU mem GB", "disk GB", "wall/job", "SLURM runtime",
               "attempts", "CPUs", "mem GB"]
    table = []
    for row in rows:
        costs, asks, gpu = row["costs"], row["asks"], row["gpu"]
        table.append([
            row["rule"], str(row["jobs"]),
            _span(row["gpu_hours"], lambda v: f"{v:.2f}") if gpu else "-",
            f"{sum(row['gpu_hours']):.1f}" if gpu else "-",
            _span([c.gpu_memory_gb for c in costs], lambda v: f"{v:.1f}") if gpu else "-",
            f"{sum(c.disk_gb for c in costs):.2f}",
            _span(row["wall"], _duration),
            _span([a["runtime"] for a in asks], lambda v: f"{v} min"),
            _span(row["attempts"], str) if row["attempts"] else "-",
            _span([a["cpus_per_task"] for a in asks], str),
            _span([a["mem_mb"] / 1024 for a in asks], lambda v: f"{v:.0f}"),
        ])
    gpu_rows = [row for row in rows if row["gpu"]]
    table.append(["total", str(sum(row["jobs"] for row in rows)), "",
                  f"{sum(sum(row['gpu_hours']) for row in rows):.1f}",
                  f"{max((c.gpu_memory_gb for row in gpu_rows for c in row['costs']), default=0):.1f}",
                  f"{sum(c.disk_gb for row in rows for c in row['costs']):.2f}", "", "", "", "", ""])
    widths = [max(len(r[i]) for r in [columns, *table]) for i in range(len(columns))]
    lines = [header, ""] + ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                      enumerate(zip(line, widths))) for line in [columns, *table]]
    cap = model.cluster["max_runtime_min"]
    lines += ["", f"partition time limit: cluster.max_runtime_min = {cap} min ({cap / 60:g} h); a longer train or "
                  f"sample run spans several jobs, attempts = jobs per run + cluster.spare_attempts "
                  f"({model.cluster['spare_attempts']}); other rules retry as the profile says",
              "wall/job: one run's wall time over all its SLURM jobs; GPU-h: GPU jobs' wall time; disk: files written"]
    too_long = sorted({row["rule"] for row in rows for c in row["costs"] if not model.fits(c)})
    if too_long:
        lines.append(f"WARNING: {', '.join(too_long)} cannot resume and need(s) more than the time limit")
    sources: dict[str, list[str]] = {}  # "how [entry]" lines merged: one line per how, its entries listed
    for source in dict.fromkeys(s for row in rows for c in row["costs"] for s in c.sources):
        how, _, entry = source.partition(" [")
        sources.setdefault(how, []).append(entry.rstrip("]"))
    lines += ["", "figures from:"] + [f"  {how}" + (f" [{'; '.join(e for e in entries if e)}]" if any(entries) else "")
                                      for how, entries in sources.items()]
    return "\n".join(lines)


def plan_report(raw: dict, preset: str | None, targets: list[str], benchmarks: Path = BENCHMARK_DIR) -> str:
    cfg = resolve_unchecked(raw, preset)
    model = CostModel(cfg, benchmarks)
    jobs = dag_jobs(cfg, targets)
    header = (f"coral plan: preset {cfg['preset']}, {' '.join(targets)}: {len(jobs)} jobs "
              f"(Snakemake's dry run in an empty folder), GPU {cfg['cluster']['gpu']}")
    return format_plan(model, plan_rows(model, jobs), header)
