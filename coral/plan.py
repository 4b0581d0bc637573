"""The cost model: what each job of a config needs (GPU time, GPU and host memory, CPUs, disk), the
SLURM resources it asks for, and the batch sizes that make it fit the card. The workflow sizes its jobs
with it (workflow/rules/common.smk); `python -m coral plan` (coral.plan_report) prints it.

Each job is costed from the network's FLOPs and ATen ops counted on the meta device (coral.flops), the
config's sizes and the GPU check of cluster.gpu (coral.measured: benchmarks/results/gpu_check-<gpu>.json)
where there is one, otherwise stated assumptions; every figure names its source.

- A training pass or denoising step takes the time of the nearest measured one (the same precision,
  layout, compile mode, image size, objective and batch where measured), scaled by its work (FLOPs), but
  no less than the host's time to launch its ops (assumed): small batches are launch-bound in eager mode.
- Its GPU memory is the parameters and optimiser states plus activations in proportion to the pass's
  work, from the nearest entry's measured peak (counted on the meta device without one).
- A run on train.devices = N GPUs of one node passes batch_size / N images per GPU and step, in passes of
  train.micro_batch_size (when set or needed); its step is those passes over a data-parallel efficiency
  (measured, else assumed), and its GPU-hours are N times its wall time.
- A train or sample job that would not fit the card's usable memory gets the largest micro-batch or
  sampling batch that fits, a divisor of the one configured (unless the config sets the micro-batch);
  `fitted_run` and `fitted_sample` give the workflow's jobs those values, which change no identity. Any
  other job that would not fit says which key to lower (`memory_warning`).
- The same costs size the jobs' SLURM resources, capped by the partition's time limit
  `cluster.max_runtime_min`: a train or sample run that needs longer spans several jobs (each saves its
  state and exits with code 75 before the limit) and its rule gets that many attempts plus
  `cluster.spare_attempts`.
"""
from __future__ import annotations

import copy
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from coral import grid
from coral import job_costs, measured
from coral.config import ConfigError
from coral.costs import CUDA_CONTEXT_GB, GB, HOST_BASE_GB, JobCost
from coral.flops import parameter_bytes, step_flops, unet_forward
from coral.measured import BENCHMARK_DIR
from coral.sources import IN_CHANNELS, NUM_CLASSES, image_bytes, image_count

GPU_RULES = ("train_classifier", "train", "sample", "reference_features", "evaluate", "latent")
RESUMABLE_RULES = ("train", "sample")  # save their state and exit with code 75 before the time limit

# ---------------------------------------------------------------- stated assumptions
# Used where nothing was measured; `coral plan` prints the ones a plan relies on (coral.measured has
# those about steps: the host's time per op, the multi-GPU efficiency, cards' memory).
# achieved FLOP/s over the GPU's dense bf16 peak, without a benchmark (an H100 reached 6-14% at paper sizes)
ASSUMED_MFU = {"fp32": 0.07, "bf16": 0.10}
USABLE_MEMORY = 0.9                  # of the card: torch's caching allocator reserves more than its peak allocation
BF16_ACTIVATION_FACTOR = 0.9         # activation bytes under bf16 autocast over fp32 (an H100 measured 0.85-0.88:
                                     # GroupNorm and SiLU stay fp32)
LIGHT_JOB_SECONDS = 10               # tables and figures
RUNTIME_SAFETY = 1.5                 # a job asks for this multiple of its estimated wall time ...
MIN_RUNTIME_MIN = 10                 # ... and at least this many minutes
CPU_SECONDS_PER_CORE = 600           # CPU-bound work gets a core per 10 minutes of it, up to cluster.max_cpus


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


# ---------------------------------------------------------------- costs of jobs

@dataclass(frozen=True)
class Pass:
    """One forward and backward pass of a training step, or one denoising step: seconds, GPU memory peak
    (GiB, CUDA context included) and where the figures come from."""

    seconds: float
    memory_gb: float
    source: str


class CostModel:
    """Costs and SLURM resources of the jobs of one resolved config (see the module docstring)."""

    def __init__(self, cfg: dict, benchmarks: Path = BENCHMARK_DIR):
        self.cfg = cfg
        self.cluster = cfg["cluster"]
        self.benchmark_file = measured.benchmark_path(self.cluster["gpu"], benchmarks)
        self.benchmark = measured.read_benchmark(self.benchmark_file)
        if self.benchmark is None:
            self.peak_flops = self._assumed_peak()
        self.card_gb = measured.card_memory_gb(self.cluster["gpu"], self.benchmark)
        self.usable_gb = USABLE_MEMORY * self.card_gb

    def _assumed_peak(self) -> float:
        from coral.bench import PEAK_BF16_FLOPS
        gpu = self.cluster["gpu"]
        peak = next((value for name, value in PEAK_BF16_FLOPS.items() if name in gpu), None)
        if peak is None:
            raise ConfigError(f"cluster.gpu: {gpu!r} has no benchmark ({self.benchmark_file}) and no known peak; "
                              f"allowed: a GPU whose name contains {', '.join(PEAK_BF16_FLOPS)}, or run the GPU check")
        return peak

    def with_devices(self, devices: int) -> CostModel:
        """The model of the same config with every run on `devices` GPUs and its micro-batch chosen for the card."""
        cfg = copy.deepcopy(self.cfg)
        for section in [cfg, *cfg["dataset_overrides"].values()]:
            section.get("train", {}).update(devices=devices, micro_batch_size=0)
        return CostModel(cfg, self.benchmark_file.parent)

    # ---------------------------------------------------------- throughput

    def want(self, phase: str, scfg: dict, image_size: int, batch: int, **extra) -> dict:
        """The benchmark entry a job of `phase` runs like: the configuration of its own config (dataset_overrides
        included), `scfg` a setting's config or a run config. train.cuda_graphs and sample.compile are read
        where the config has them."""
        train = scfg["train"]
        section = train if phase == "training" else scfg["sample"]
        want = {"image_size": image_size, "batch_size": batch, "dtype": "bf16" if section["bf16_autocast"] else "fp32",
                "layout": "channels_last" if train["channels_last"] else "nchw", "compile": section.get("compile", False)}
        # sample.compile replays its compiled step as a CUDA graph on a GPU (coral.compiled_step)
        want["cuda_graphs"] = train.get("cuda_graphs", False) if phase == "training" else want["compile"]
        return {**want, **extra}

    def _entry(self, phase: str, want: dict) -> tuple[dict, str, bool]:
        """The benchmark entry for `want`, where the figure comes from, and whether it is exactly this job."""
        entry, differences = measured.pick_entry(self.benchmark[phase], want)
        nearest = f" (nearest: {'; '.join(differences)})" if differences else ""
        return entry, f"{self.benchmark_file.name} {phase} [{measured.describe(entry)}{nearest}]", not differences

    def _assumed(self, want: dict) -> tuple[float, str]:
        mfu = ASSUMED_MFU[want["dtype"]]
        return mfu * self.peak_flops, (f"assumed {mfu:.0%} of the {self.peak_flops / 1e12:.0f} TFLOP/s bf16 peak of "
                                       f"{self.cluster['gpu']} ({want['dtype']}; no {self.benchmark_file.name})")

    def _scaled(self, entry: dict, time_key: str, entry_work: float, work: float, ops: int, source: str,
                exact: bool) -> tuple[float, str]:
        """Seconds of a pass doing `work` FLOPs in `ops` ops from a measured entry (measured.scaled_seconds)."""
        if exact:
            return entry[time_key] / 1e3, f"measured {source}"
        floor = f"{measured.ASSUMED_SECONDS_PER_OP * 1e6:.0f} us per op"
        return (measured.scaled_seconds(entry[time_key] / 1e3, entry_work, work, ops),
                f"scaled by FLOPs, not below an assumed {floor}, from {source}")

    def training_rate(self, want: dict) -> tuple[float, str]:
        """Achieved FLOP/s of a training step like `want`, and its source."""
        if self.benchmark is None:
            return self._assumed(want)
        entry, source, _ = self._entry("training", want)
        return entry["flops_per_step"] / (entry["ms_per_step"] / 1e3), source

    def inference_rate(self, want: dict, flops_per_image: float) -> tuple[float, str]:
        """Achieved FLOP/s of the guided denoising step of a network costing `flops_per_image` at want's
        image size: the entry's measured time over that network's FLOPs (scaled by pixels from the
        entry's size), or the assumption."""
        if self.benchmark is None:
            return self._assumed(want)
        entry, source, _ = self._entry("sampling", want)
        images = entry["batch_size"] * (2 if measured.value(entry, "guided") else 1)
        flops = flops_per_image * (entry["image_size"] / want["image_size"]) ** 2 * images
        return flops / (entry["ms_per_denoising_step"] / 1e3), source

    def train_pass(self, run: dict, images: int) -> Pass:
        """A forward and backward pass of `images` images of a run on one GPU: time and memory from the
        nearest measured step, or its FLOPs at the assumed rate and its counted saved activations."""
        data, train = run["data"], run["train"]
        channels, classes = IN_CHANNELS[data["dataset"]], NUM_CLASSES[data["dataset"]]
        step, share = step_flops(run, channels, classes), images / train["batch_size"]
        work = step["flops"] * share
        model, extra = parameter_bytes(run, channels, classes)
        states = 4 * (model + extra) + model  # weights, gradients, two Adam moments; the EMA copy
        counted = step["saved_bytes"] * share * (BF16_ACTIVATION_FACTOR if train["bf16_autocast"] else 1)
        want = self.want("training", run, data["image_size"], images, objective=run["objective"]["name"])
        if self.benchmark is None:
            rate, source = self._assumed(want)
            return Pass(max(step["ops"] * measured.ASSUMED_SECONDS_PER_OP, work / rate),
                        CUDA_CONTEXT_GB + (states + counted) / GB, f"FLOPs at {source}")
        entry, source, exact = self._entry("training", want)
        seconds, source = self._scaled(entry, "ms_per_step", entry["flops_per_step"], work, step["ops"], source, exact)
        peak = entry.get("peak_memory_gb")  # its activations: the peak less a DDPM step's states (5 x the UNet)
        activations = (peak * GB - 5 * model) * (1 if exact else work / entry["flops_per_step"]) if peak else counted
        return Pass(seconds, CUDA_CONTEXT_GB + (states + activations) / GB, source)

    def sample_pass(self, run: dict, sample: dict, batch: int, guided: bool) -> Pass:
        """A denoising step of `batch` images of a run (guidance doubles the network's batch): time and
        memory from the nearest measured step, or its FLOPs at the assumed rate and counted activations."""
        data = run["data"]
        size, channels = data["image_size"], IN_CHANNELS[data["dataset"]]
        images = batch * (2 if guided else 1)
        net = unet_forward(json.dumps(run["model"]), size, channels, 1)
        work = net["flops_per_image"] * images
        model, _ = parameter_bytes(run, channels, NUM_CLASSES[data["dataset"]])
        counted = net["live_bytes"] * images * (BF16_ACTIVATION_FACTOR if sample["bf16_autocast"] else 1)
        want = self.want("sampling", {"train": run["train"], "sample": sample}, size, batch, guided=guided)
        if self.benchmark is None:
            rate, source = self._assumed(want)
            return Pass(max(net["ops"] * measured.ASSUMED_SECONDS_PER_OP, work / rate),
                        CUDA_CONTEXT_GB + (model + counted) / GB, f"FLOPs at {source}")
        entry, source, exact = self._entry("sampling", want)
        entry_images = entry["batch_size"] * (2 if measured.value(entry, "guided") else 1)
        entry_work = net["flops_per_image"] * (entry["image_size"] / size) ** 2 * entry_images
        seconds, source = self._scaled(entry, "ms_per_denoising_step", entry_work, work, net["ops"], source, exact)
        peak = entry.get("peak_memory_gb")
        activations = (peak * GB - model) * (1 if exact else work / entry_work) if peak else counted
        return Pass(seconds, CUDA_CONTEXT_GB + (model + activations) / GB, source)

    # ---------------------------------------------------------- batches that fit the card

    def micro_batch(self, run: dict) -> tuple[int, bool]:
        """The images of one training pass per GPU, and whether they were chosen for the card: the config's
        train.micro_batch_size, else the per-device batch where it fits, else the largest divisor of it
        that fits (1 where none does)."""
        train = run["train"]
        per_device = train["batch_size"] // train["devices"]
        if train["micro_batch_size"] or self.train_pass(run, per_device).memory_gb <= self.usable_gb:
            return train["micro_batch_size"] or per_device, False
        fitting = [d for d in divisors(per_device) if self.train_pass(run, d).memory_gb <= self.usable_gb]
        return max(fitting, default=1), True

    def fitted_run(self, run: dict) -> dict:
        """A run config as its training job gets it: train.micro_batch_size chosen for the card where the
        config leaves it 0 and the per-device batch would not fit (outside the run's identity)."""
        micro, chosen = self.micro_batch(run)
        return {**run, "train": {**run["train"], "micro_batch_size": micro}} if chosen else run

    def sample_batch(self, setting: str, variant: str, omega: float) -> tuple[int, bool]:
        """The sampling batch of a run, and whether it was chosen for the card: sample.batch_size where it
        fits, else its largest divisor that fits (1 where none does)."""
        run, sample = self.run_config(setting, variant), grid.setting_config(self.cfg, setting)["sample"]

        def fits(batch: int) -> bool:
            return self.sample_pass(run, sample, batch, omega != 0).memory_gb <= self.usable_gb

        if fits(sample["batch_size"]):
            return sample["batch_size"], False
        return max([d for d in divisors(sample["batch_size"]) if fits(d)], default=1), True

    def fitted_sample(self, setting: str, variant: str, omega: float) -> dict:
        """A setting's sample section as a sampling job of this run gets it: sample.batch_size chosen for the
        card (outside the sample set's identity) and this omega."""
        sample = grid.setting_config(self.cfg, setting)["sample"]
        return {**sample, "omega": omega, "batch_size": self.sample_batch(setting, variant, omega)[0]}

    def memory_warning(self, cost: JobCost) -> str | None:
        """One line for a job whose GPU memory exceeds the card's usable memory, naming the fix; None if it fits."""
        if not cost.gpu or cost.gpu_memory_gb <= self.usable_gb:
            return None
        return (f"{cost.rule}: {cost.gpu_memory_gb:.1f} GB of GPU memory, more than the {self.usable_gb:.1f} GB usable "
                f"of {self.cluster['gpu']} ({USABLE_MEMORY:.0%} of {self.card_gb:g} GB): {cost.memory_fix}")

    # ---------------------------------------------------------- jobs

    def cost(self, rule: str, wildcards: dict) -> JobCost:
        """The cost of one job of `rule` with these wildcards; rules without a model are light jobs."""
        return self._cost(rule, tuple(sorted(wildcards.items())))

    @functools.lru_cache(maxsize=None)
    def _cost(self, rule: str, wildcards: tuple) -> JobCost:
        w = dict(wildcards)
        if rule == "subsample":
            return job_costs.decode(self, "subsample", grid.setting_config(self.cfg, w["setting"])["data"],
                                    "train")
        if rule == "reference":
            return job_costs.decode(self, "reference", grid.dataset_config(self.cfg, w["dataset"]), "reference")
        if rule == "train_classifier":
            return job_costs.train_classifier(self, w["dataset"])
        if rule == "train":
            return self._train(w["setting"], w["variant"])
        if rule == "sample":
            return self._sample(w["setting"], w["variant"], self.omega(w))
        if rule == "reference_features":
            return job_costs.reference_features(self, w["dataset"])
        if rule == "evaluate":
            return job_costs.evaluate(self, w["setting"])
        if rule == "latent":
            return job_costs.latent(self, w["setting"], w["variant"])
        return JobCost(rule, gpu=False, cpu_seconds=LIGHT_JOB_SECONDS, host_memory_gb=HOST_BASE_GB["cpu"],
                       sources=("tables, figures and unmodelled rules: a light CPU job",))

    def omega(self, wildcards: dict) -> float:
        """A sampling job's guidance: its wildcard, else its method's in the config."""
        method = grid.variants(self.cfg)[wildcards["variant"]][0]
        sample = grid.setting_config(self.cfg, wildcards["setting"])["sample"]
        return float(wildcards.get("omega") or grid.omega_of(sample, method))

    def job(self, rule: str, **figures) -> JobCost:
        """A JobCost whose CPU work gets a core per CPU_SECONDS_PER_CORE (and one per device at least), up to
        cluster.max_cpus."""
        cores = max(figures.get("devices", 1), math.ceil(figures.get("cpu_seconds", 0) / CPU_SECONDS_PER_CORE))
        return JobCost(rule, gpu=rule in GPU_RULES, cpus=min(self.cluster["max_cpus"], cores), **figures)

    def run_config(self, setting: str, variant: str) -> dict:
        return grid.run_config(self.cfg, setting, variant, 0)

    def _train(self, setting: str, variant: str) -> JobCost:
        """train.steps steps, each of batch_size / devices images per GPU in passes of the micro-batch,
        over the data-parallel efficiency on several GPUs."""
        run = self.run_config(setting, variant)
        data, train = run["data"], run["train"]
        devices, (micro, chosen) = train["devices"], self.micro_batch(run)
        one = self.train_pass(run, micro)
        efficiency, ddp = measured.ddp_efficiency(self.benchmark, devices) if devices > 1 else (1.0, "")
        step_seconds = train["batch_size"] // devices // micro * one.seconds / efficiency
        model, extra = parameter_bytes(run, IN_CHANNELS[data["dataset"]], NUM_CLASSES[data["dataset"]])
        checkpoint = 4 * model + 3 * extra  # weights, EMA, objective and their Adam moments
        fix = ("a larger card: one image per pass does not fit" if micro == 1 else
               f"set train.micro_batch_size to a smaller divisor of {train['batch_size'] // devices}, or 0 to have "
               "it chosen for the card")
        return self.job(
            "train", gpu_seconds=train["steps"] * step_seconds, devices=devices, gpu_memory_gb=one.memory_gb,
            host_memory_gb=devices * (HOST_BASE_GB["gpu"] + (image_count(data, "train") * image_bytes(data)
                                                             + checkpoint) / GB),  # each process loads both
            disk_gb=(train["keep_checkpoints"] * checkpoint + 2 * model + extra) / GB,
            fitted=f"train.micro_batch_size {micro}" if chosen else "", memory_fix=fix,
            sources=(f"train: {one.source}", *([f"train: {ddp}"] if ddp else [])))

    def _sample(self, setting: str, variant: str, omega: float) -> JobCost:
        run, sample = self.run_config(setting, variant), grid.setting_config(self.cfg, setting)["sample"]
        batch, chosen = self.sample_batch(setting, variant, omega)
        one = self.sample_pass(run, sample, batch, omega != 0)
        steps = run["diffusion"]["T"] if sample["sampler"] == "ddpm" else sample["steps"]
        model, _ = parameter_bytes(run, IN_CHANNELS[run["data"]["dataset"]], NUM_CLASSES[run["data"]["dataset"]])
        stored = sample["num_samples"] * image_bytes(run["data"])
        return self.job(
            "sample", gpu_seconds=sample["num_samples"] / batch * steps * one.seconds, gpu_memory_gb=one.memory_gb,
            host_memory_gb=HOST_BASE_GB["gpu"] + (2 * stored + 2 * model) / GB, disk_gb=stored / GB,
            fitted=f"sample.batch_size {batch}" if chosen else "",
            memory_fix="a larger card: one image per batch does not fit", sources=(f"sample: {one.source}",))

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
        pairs = {(setting, method) for setting in grid.settings(cfg) for method in cfg["methods"]}
        pairs |= {(grid.ablation_setting(cfg), variant) for variant in grid.variants(cfg)}
        omega = {"omega": "1.0"}  # guided: two forwards per step
        return max(self.attempts(self.cost(rule, {"setting": s, "variant": v, **omega})) for s, v in pairs) - 1
