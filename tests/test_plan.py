"""The cost model and `coral plan`: FLOP counts, the GPU benchmark reader, SLURM resources, job counts,
runs on several GPUs, batches chosen for the card, the fastest measured configuration."""
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from coral import config as config_module
from coral import grid
from coral import costs, flops, measured, plan, plan_report
from coral.cli import main

from conftest import REPO

GPU = "NVIDIA H100 80GB HBM3"
TINY = {"ch": 32, "ch_mult": [1], "attn": [], "num_res_blocks": 1, "dropout": 0.0}


def resolved(preset: str, **cluster) -> dict:
    cfg = plan_report.resolve_unchecked(config_module.load_yaml(REPO / "config.yaml"), preset)
    cfg["cluster"].update({"gpu": GPU, **cluster})
    return cfg


def write_benchmark(folder: Path, training: list[dict], sampling: list[dict], gpu: str = GPU, **extra) -> Path:
    path = measured.benchmark_path(gpu, folder)
    path.write_text(json.dumps({"machine": {"gpu": gpu}, "peak_bf16_flops": 9.89e14,
                                "training": training, "sampling": sampling, **extra}))
    return path


def training_entry(size, dtype, layout, objective, ms, memory=None):
    entry = {"image_size": size, "objective": objective, "dtype": dtype, "layout": layout, "batch_size": 128,
             "ms_per_step": ms, "flops_per_step": 1e12 * ms / 10}  # 100 TFLOP/s achieved
    return {**entry, "tflops": 100.0, **({"peak_memory_gb": memory} if memory else {})}


SAMPLING = [{"image_size": 32, "dtype": "fp32", "layout": "nchw", "batch_size": 1000, "guided": True,
             "ms_per_denoising_step": 300.0, "peak_memory_gb": 15.0}]


# ---------------------------------------------------------------- FLOPs

def test_unet_forward_flops_match_a_hand_count():
    size, hw, c, t = 4, 16, 32, 128  # 4x4 gray images; time embedding 4 ch

    def conv(cin, cout, k):
        return 2 * cin * cout * k * k * hw

    def linear(i, o):
        return 2 * i * o

    def resblock(cin, cout):
        return conv(cin, cout, 3) + linear(t, cout) + conv(cout, cout, 3) + (conv(cin, cout, 1) if cin != cout else 0)

    attention = conv(c, 3 * c, 1) + 2 * (2 * hw * hw * c) + conv(c, c, 1)  # qkv, QK^T and AV, proj
    expected = (linear(c, t) + linear(t, t) + conv(1, c, 3)  # time MLP, head
                + resblock(c, c)                              # the one level's block
                + resblock(c, c) + attention + resblock(c, c)  # middle: attention in its first block
                + 2 * resblock(2 * c, c) + conv(c, 1, 3))      # up blocks over the concatenated skips, tail
    assert flops.unet_forward(json.dumps(TINY), size, 1, 2)["flops_per_image"] == expected


def test_objectives_add_their_own_flops_to_the_network():
    cfg = resolved("smoke")
    batch, size, channels = 4, 4, 1

    def step(method):
        run = grid.run_config(cfg, "animals-rho0.1", method, 0)
        run["model"], run["data"]["image_size"], run["train"]["batch_size"] = TINY, size, batch
        return run, flops.step_flops(run, channels, 10)["flops"]

    _, ddpm = step("ddpm")
    assert step("cbdm")[1] == 2 * ddpm  # one forward and backward of the doubled batch
    assert step("t2h")[1] - ddpm == 3 * batch * batch * channels * size * size  # cdist of the batch
    run, coral = step("coral")
    bottleneck, proj = TINY["ch"] * TINY["ch_mult"][-1], run["objective"]["hparams"]["proj_dim"]
    # projection head: forward, weight and input gradients; SupCon's z z^T: forward and two gradients
    assert coral - ddpm == 3 * 2 * batch * bottleneck * proj + 3 * 2 * batch * batch * proj


def test_counts_are_kept_in_the_cache_and_read_back_without_torch(tmp_path):
    """A second process reads the count that the first stored, and imports no torch; a damaged file is
    counted again and rewritten."""
    script = ("import json, sys; from coral import flops; "
              f"print(json.dumps([flops.unet_forward(json.dumps({TINY!r}), 4, 1, 2), 'torch' in sys.modules]))")

    def count() -> list:
        done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "CORAL_CACHE_DIR": str(tmp_path)},
                              cwd=REPO, capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    counted, read = count(), count()
    assert counted == [read[0], True] and read[1] is False
    [stored] = tmp_path.glob("counts-*.json")
    stored.write_text('{"damaged')
    assert count() == counted and json.loads(stored.read_text())


# ---------------------------------------------------------------- the benchmark

def test_reader_picks_the_matching_entry_or_the_nearest(tmp_path):
    entries = [training_entry(size, dtype, layout, "ddpm", ms) for size, dtype, layout, ms in
               [(32, "fp32", "nchw", 64), (32, "bf16", "nchw", 80), (64, "fp32", "nchw", 180),
                (64, "bf16", "channels_last", 190)]]
    data = measured.read_benchmark(write_benchmark(tmp_path, entries, SAMPLING))
    want = {"image_size": 64, "dtype": "fp32", "layout": "nchw", "batch_size": 128, "objective": "ddpm"}
    assert measured.pick_entry(data["training"], want) == (entries[2], [])
    entry, differences = measured.pick_entry(data["training"], {**want, "image_size": 48, "dtype": "bf16"})
    assert entry == entries[1] and differences == ["image_size 32 instead of 48"]  # precision before size
    entry, differences = measured.pick_entry(data["training"], {**want, "objective": "cbdm"})
    assert entry == entries[2] and differences == ["objective ddpm instead of cbdm"]


def test_train_time_is_measured_when_the_benchmark_has_the_step_and_flops_otherwise(tmp_path):
    cfg = resolved("paper")
    cfg["train"].update(bf16_autocast=False, channels_last=False)
    write_benchmark(tmp_path, [training_entry(32, "fp32", "nchw", "ddpm", 64.0, memory=7.0)], SAMPLING)
    model = plan.CostModel(cfg, tmp_path)
    exact = model.cost("train", {"setting": "cifar10-rho0.01", "variant": "ddpm"})
    assert exact.gpu_seconds == pytest.approx(cfg["train"]["steps"] * 0.064)
    assert exact.gpu_memory_gb == pytest.approx(7.0 + costs.CUDA_CONTEXT_GB)
    # CBDM: no entry of its own, so its counted FLOPs at the DDPM entry's 100 TFLOP/s
    cbdm = model.cost("train", {"setting": "cifar10-rho0.01", "variant": "cbdm"})
    run = grid.run_config(cfg, "cifar10-rho0.01", "cbdm", 0)
    step_flops = flops.step_flops(run, 3, 10)["flops"]
    assert cbdm.gpu_seconds == pytest.approx(cfg["train"]["steps"] * step_flops / 100e12)
    assert "nearest: objective ddpm instead of cbdm" in " ".join(cbdm.sources)
    # sampling: the entry's measured time per denoising step, 1000 ancestral steps, 50 batches
    sample = model.cost("sample", {"setting": "cifar10-rho0.01", "variant": "ddpm", "omega": "1.0"})
    assert sample.gpu_seconds == pytest.approx(cfg["sample"]["num_samples"] / 1000 * 1000 * 0.3)


def test_sampling_time_is_the_compiled_steps_with_sample_compile(tmp_path):
    cfg = resolved("paper")
    compiled = {**SAMPLING[0], "compile": True, "cuda_graphs": True, "ms_per_denoising_step": 120.0}
    skipped = {**{key: SAMPLING[0][key] for key in ("image_size", "dtype", "layout", "batch_size")},
               "compile": True, "cuda_graphs": True, "batch_size": 500,
               "skipped": "time limit of the check"}  # not measured: left out
    write_benchmark(tmp_path, [training_entry(32, "fp32", "nchw", "ddpm", 64.0)], [compiled, skipped, *SAMPLING])
    wildcards = {"setting": "cifar10-rho0.01", "variant": "ddpm", "omega": "1.0"}
    eager = plan.CostModel(cfg, tmp_path).cost("sample", wildcards)
    assert eager.gpu_seconds == pytest.approx(cfg["sample"]["num_samples"] / 1000 * 1000 * 0.3)
    cfg["sample"]["compile"] = True
    fast = plan.CostModel(cfg, tmp_path).cost("sample", wildcards)
    assert fast.gpu_seconds == pytest.approx(cfg["sample"]["num_samples"] / 1000 * 1000 * 0.12)
    assert all("nearest" not in source for source in eager.sources + fast.sources)


def test_without_a_benchmark_the_assumption_is_stated(tmp_path):
    model = plan.CostModel(resolved("paper"), tmp_path)
    cost = model.cost("train", {"setting": "cifar10-rho0.01", "variant": "ddpm"})
    assert any(source.startswith("train: FLOPs at assumed") and "no gpu_check-NVIDIA_H100" in source
               for source in cost.sources)


def test_a_bad_benchmark_or_gpu_is_one_clear_error(tmp_path):
    path = write_benchmark(tmp_path, [], SAMPLING)
    with pytest.raises(config_module.ConfigError,
                       match=r"cluster.gpu: .*gpu_check-NVIDIA.* no measured 'training' entries"):
        plan.CostModel(resolved("paper"), tmp_path)
    path.write_text("{")
    with pytest.raises(config_module.ConfigError, match="is not valid JSON"):
        plan.CostModel(resolved("paper"), tmp_path)
    cfg = resolved("paper")
    cfg["cluster"]["gpu"] = "Quadro K600"
    with pytest.raises(config_module.ConfigError, match="cluster.gpu: 'Quadro K600' has no benchmark .* allowed: "
                                                        "a GPU whose name contains H100, H200, A100"):
        plan.CostModel(cfg, tmp_path)


# ---------------------------------------------------------------- SLURM resources

SMOKE_JOBS = [("subsample", {"setting": "animals-rho0.1"}), ("reference", {"dataset": "animals"}),
              ("train_classifier", {"dataset": "animals"}), ("reference_features", {"dataset": "animals"}),
              ("main_table", {})] + [
    (rule, {"setting": "animals-rho0.1", "variant": method, "seed": "0", "sampler": "ddim5", "omega": "1.0"})
    for rule in ("train", "sample", "evaluate", "latent") for method in ("ddpm", "cbdm", "t2h", "coral")]


def test_smoke_jobs_ask_for_minutes_and_one_cpu():
    model = plan.CostModel(resolved("smoke"))
    for rule, wildcards in SMOKE_JOBS:
        asks = model.resources(rule, wildcards)
        assert asks["runtime"] <= 15 and asks["cpus_per_task"] == 1 and asks["mem_mb"] <= 8 * 1024, (rule, asks)
        assert asks.get("gpu_mem_gb", 0) <= 2
        assert model.resources(rule, wildcards, attempt=2)["runtime"] > asks["runtime"]  # a retry asks for more
    assert model.retries("train") == model.retries("sample") == model.cluster["spare_attempts"]


def test_paper_training_spans_jobs_at_the_time_limit(tmp_path):
    cap = 30 * 60
    cfg = resolved("paper", max_runtime_min=cap, spare_attempts=1)
    cfg["train"].update(bf16_autocast=True, channels_last=False)
    write_benchmark(tmp_path, [training_entry(64, "bf16", "nchw", "cbdm", 300.0, memory=38.0),
                               training_entry(32, "bf16", "nchw", "ddpm", 80.0, memory=6.0)], SAMPLING)
    model = plan.CostModel(cfg, tmp_path)
    long_run = {"setting": "imagenet_lt", "variant": "cbdm", "seed": "0"}
    needed = cfg["train"]["steps"] * 0.300  # 66.7 h: three 30 h jobs
    attempts = math.ceil(needed / (cap * 60)) + 1
    assert model.attempts(model.cost("train", long_run)) == attempts == 4
    for attempt in range(1, attempts + 1):
        assert model.resources("train", long_run, attempt)["runtime"] == cap
    assert model.retries("train") == attempts - 1
    short_run = {"setting": "cifar10-rho0.01", "variant": "ddpm", "seed": "0"}  # 17.8 h: one job, 26.7 h asked
    first = model.resources("train", short_run, 1)["runtime"]
    assert cfg["train"]["steps"] * 0.080 / 60 < first < cap
    assert model.resources("train", short_run, 2)["runtime"] == cap  # the spare attempt grows, within the limit
    assert model.resources("train", short_run, 9)["mem_mb"] <= cfg["cluster"]["max_mem_gb"] * 1024


def test_imagenet_lt_evaluation_counts_the_capped_prd_and_extracts_the_reference_once(tmp_path):
    write_benchmark(tmp_path, [training_entry(64, "fp32", "nchw", "ddpm", 180.0)], SAMPLING)
    run = {"setting": "imagenet_lt", "variant": "ddpm", "seed": "0", "sampler": "ddpm", "omega": "1.0"}
    generated, real, dim = 50_000, 50_000, 2048

    def evaluate_seconds(max_clusters: int) -> float:
        cfg = resolved("paper")
        cfg["evaluate"]["prd_max_clusters"] = max_clusters
        return plan.CostModel(cfg, tmp_path).cost("evaluate", run).gpu_seconds

    def prd_flops(k: int) -> float:  # by hand: per run, a 3k-point seeding's Gram, 100 steps of 2048 points, one pass
        return 10 * 2 * dim * ((3 * k) ** 2 + (100 * 2048 + generated + real) * k)

    # the PRD term scales as counted by hand (the ratio of differences cancels the FLOP rate)
    model_ratio = (evaluate_seconds(2000) - evaluate_seconds(1000)) / (evaluate_seconds(4000) - evaluate_seconds(2000))
    assert model_ratio == pytest.approx((prd_flops(2000) - prd_flops(1000)) / (prd_flops(4000) - prd_flops(2000)))
    # the reference set is extracted once, by its own job: evaluate extracts the samples, then the metrics
    model = plan.CostModel(resolved("paper"), tmp_path)
    per_image = model.cost("reference_features", {"dataset": "imagenet_lt"}).gpu_seconds / real
    assert generated * per_image < model.cost("evaluate", run).gpu_seconds < 2 * generated * per_image
    assert model.resources("evaluate", run)["runtime"] <= 60  # was 15 h at 20 x C clusters on the CPU


# ---------------------------------------------------------------- the jobs of a target

@pytest.mark.slow  # a dry run of the paper preset
def test_plan_counts_the_jobs_of_the_paper_main_table_without_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here: the dry run uses stand-ins
    counts = Counter(rule for rule, _ in plan_report.dag_jobs(resolved("paper"), [plan_report.DEFAULT_TARGET]))
    settings, datasets, runs = 5, 4, 5 * 4 * 3
    assert counts.pop("reference_features", datasets) == datasets  # a per-dataset rule, where there is one
    assert counts == {"subsample": settings, "reference": datasets, "train_classifier": datasets, "train": runs,
                      "sample": runs, "evaluate": runs, "main_table": 1}


def test_cli_prints_a_row_per_rule_and_totals(capfd):
    assert main(["plan", "--config", str(REPO / "config.yaml"), "--preset", "smoke"]) == 0
    lines = capfd.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines if line.split() and line.split()[0] in
            ("subsample", "train", "sample", "evaluate", "main_table", "total")}
    assert rows["train"][1] == rows["sample"][1] == rows["evaluate"][1] == "4" and rows["main_table"][1] == "1"
    assert any(line.startswith("partition time limit: cluster.max_runtime_min") for line in lines)
    assert main(["plan", "--config", str(REPO / "config.yaml"), "--preset", "nope"]) == 2
    assert "config error: preset: 'nope' is not defined under presets; allowed: embedded, smoke, claims, paper" in \
        capfd.readouterr().err


def test_rule_retries_take_precedence_over_the_profile(tmp_path):
    """Snakemake 9: a rule's `retries:` wins over the profile's/--retries; rules without one use those. Where
    jobs go to a cluster (--jobs N, as the SLURM profile's `jobs: 100`) train and sample get the planned ones;
    a local run (--cores) retries neither, so a failure prints its error once."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, ExecutionSettings, OutputSettings, RemoteExecutionSettings,
                                          ResourceSettings)
    def restarts(resources):
        with SnakemakeApi(OutputSettings()) as api:
            workflow = api.workflow(resources, ConfigSettings(configfiles=[REPO / "config.yaml"],
                                                              config={"preset": "smoke"}),
                                    snakefile=REPO / "Snakefile", workdir=tmp_path)._workflow
            workflow.execution_settings = ExecutionSettings(retries=2)  # the profile's `retries`
            workflow.remote_execution_settings = RemoteExecutionSettings()
            return {rule.name: rule.restart_times for rule in workflow.rules}

    model = plan.CostModel(resolved("smoke"))
    cluster = restarts(ResourceSettings(nodes=100))
    assert cluster["train"] == model.retries("train") >= 1 and cluster["sample"] == model.retries("sample") >= 1
    assert cluster["evaluate"] == cluster["subsample"] == 2
    local = restarts(ResourceSettings(cores=2))
    assert local["train"] == local["sample"] == 0


# ---------------------------------------------------------------- several GPUs

def test_a_run_on_eight_gpus_takes_its_measured_per_gpu_step_over_the_efficiency(tmp_path):
    ddpm = {"image_size": 64, "objective": "ddpm", "dtype": "bf16", "layout": "nchw"}
    write_benchmark(tmp_path, [{**ddpm, "batch_size": 128, "ms_per_step": 141.0, "flops_per_step": 18e12},
                               {**ddpm, "batch_size": 16, "ms_per_step": 40.0, "flops_per_step": 2.25e12}],
                    SAMPLING, ddp_efficiency={"8": 0.8})
    model = plan.CostModel(resolved("paper"), tmp_path).with_devices(8)
    cost = model.cost("train", {"setting": "imagenet_lt", "variant": "ddpm"})
    steps = 800_000  # 128 images a step: 16 on each of the 8 GPUs, the measured 40 ms over the measured 0.8
    assert cost.devices == 8 and cost.gpu_seconds == pytest.approx(steps * 0.040 / 0.8)
    assert model.wall_seconds(cost) == pytest.approx(steps * 0.040 / 0.8 + costs.START_SECONDS["gpu"])  # one 48 h job
    assert "train: DDP efficiency 0.80 on 8 GPUs (measured)" in cost.sources
    rows = plan_report.plan_rows(model, [("train", {"setting": "imagenet_lt", "variant": "ddpm", "seed": "0"})])
    assert rows[0]["gpu_hours"] == [pytest.approx(8 * model.wall_seconds(cost) / 3600)]  # GPU-hours: 8 x the wall


def test_a_launch_bound_step_is_no_faster_on_fewer_images_and_the_efficiency_is_assumed(tmp_path):
    # 10 ms for the whole 64 px step: less than the host takes to launch its ops (hundreds, at 30 us each)
    write_benchmark(tmp_path, [{"image_size": 64, "objective": "ddpm", "dtype": "bf16", "layout": "nchw",
                                "batch_size": 128, "ms_per_step": 10.0, "flops_per_step": 18e12}], SAMPLING)
    model = plan.CostModel(resolved("paper"), tmp_path).with_devices(8)
    cost = model.cost("train", {"setting": "imagenet_lt", "variant": "ddpm"})
    assert cost.gpu_seconds == pytest.approx(800_000 * 0.010 / 0.9)  # 16 images a GPU take the same 10 ms
    assert "train: DDP efficiency 0.90 on 8 GPUs (assumed)" in cost.sources
    assert any("not below an assumed 30 us per op" in source and "batch_size 128 instead of 16" in source
               for source in cost.sources)


# ---------------------------------------------------------------- fitting the card

A100 = "NVIDIA A100-SXM4-40GB"  # 40 GiB, 36 usable


def unet_gib(cfg: dict, setting: str) -> float:
    """A setting's UNet in GiB, counted on the CPU."""
    from coral.unet import build_unet
    run = grid.run_config(cfg, setting, "ddpm", 0)
    return 4 * sum(p.numel() for p in build_unet(run["model"], 3, 1000).parameters()) / 2 ** 30


def test_a_training_pass_that_does_not_fit_gets_the_largest_micro_batch_that_does(tmp_path):
    from coral import identity
    cfg = resolved("paper", gpu=A100)
    run = grid.run_config(cfg, "imagenet_lt", "cbdm", 0)
    states = 5 * unet_gib(cfg, "imagenet_lt")  # weights, gradients, two Adam moments, EMA (CBDM adds no weights)
    step = flops.step_flops(run, 3, 1000)["flops"]
    # a measured CBDM step at batch 128: 10 s, its peak the states and 100 GiB of activations
    write_benchmark(tmp_path, [{"image_size": 64, "objective": "cbdm", "dtype": "bf16", "layout": "nchw",
                                "batch_size": 128, "ms_per_step": 10_000.0, "flops_per_step": step,
                                "peak_memory_gb": states + 100}],
                    SAMPLING, gpu=A100)
    model = plan.CostModel(cfg, tmp_path)
    # by hand: 1 GiB of CUDA context + states + 100 m / 128 GiB <= 36 usable: m <= 43.4, so 32 of 128's divisors
    assert model.micro_batch(run) == (32, True)
    cost = model.cost("train", {"setting": "imagenet_lt", "variant": "cbdm"})
    assert cost.gpu_memory_gb == pytest.approx(1 + states + 25)
    assert cost.gpu_seconds == pytest.approx(800_000 * 4 * 2.5)  # four passes of 32, each a quarter of 10 s
    assert cost.fitted == "train.micro_batch_size 32" and model.memory_warning(cost) is None
    fitted = model.fitted_run(run)
    assert fitted["train"]["micro_batch_size"] == 32 and identity.run(fitted) == identity.run(run)
    # a micro-batch the config sets is kept, and flagged with the fix where it does not fit
    cfg["train"]["micro_batch_size"] = 64  # 1 + states + 50 GiB
    model = plan.CostModel(cfg, tmp_path)
    cost = model.cost("train", {"setting": "imagenet_lt", "variant": "cbdm"})
    assert cost.gpu_memory_gb == pytest.approx(1 + states + 50) and not cost.fitted
    assert model.memory_warning(cost) == (
        f"train: {1 + states + 50:.1f} GB of GPU memory, more than the 36.0 GB usable of {A100} (90% of 40 GB): "
        "set train.micro_batch_size to a smaller divisor of 128, or 0 to have it chosen for the card")


def test_a_sampling_batch_that_does_not_fit_gets_the_largest_divisor_that_does(tmp_path):
    from coral import identity
    cfg = resolved("paper", gpu=A100)
    model_gib = unet_gib(cfg, "imagenet_lt")
    # a measured denoising step of 1000 images (2000 through the network): 2 s, the model and 60 GiB of activations
    write_benchmark(tmp_path, [training_entry(64, "bf16", "nchw", "ddpm", 141.0)],
                    [{"image_size": 64, "dtype": "fp32", "layout": "nchw", "batch_size": 1000, "guided": True,
                      "ms_per_denoising_step": 2000.0, "peak_memory_gb": model_gib + 60}], gpu=A100)
    model = plan.CostModel(cfg, tmp_path)
    # by hand: 1 + model + 60 b / 1000 <= 36: b <= 580, so 500 of 1000's divisors
    assert model.sample_batch("imagenet_lt", "ddpm", 0.8) == (500, True)
    cost = model.cost("sample", {"setting": "imagenet_lt", "variant": "ddpm", "omega": "0.8"})
    assert cost.gpu_memory_gb == pytest.approx(1 + model_gib + 30)
    assert cost.gpu_seconds == pytest.approx(50_000 / 500 * 1000 * 1.0)  # 1000 steps of half the batch: 1 s each
    section = model.fitted_sample("imagenet_lt", "ddpm", 0.8)
    assert (section["batch_size"], section["omega"]) == (500, 0.8)
    assert identity.sample(section, "ddpm") == identity.sample({**section, "batch_size": 1000}, "ddpm")


@pytest.mark.slow  # a dry run of the paper preset
def test_the_paper_plan_on_a_40_gb_card_flags_nothing():
    raw = config_module.load_yaml(REPO / "config.yaml")
    raw["cluster"]["gpu"] = A100  # no GPU check of it: the memory model counted on the meta device
    report = plan_report.plan_report(raw, "paper", ["all"])
    assert "WARNING" not in report
    # the six 64 px CBDM runs (2 settings x 3 seeds) train in micro-batches, the 24 sample sets of the 64 px
    # runs (2 settings x 4 methods x 3 seeds) in smaller batches; nothing else changes
    fitted = [line for line in report.splitlines() if line.startswith("fitted to the card")]
    assert fitted == ["fitted to the card: 6 train job(s) get train.micro_batch_size 64",
                      "fitted to the card: 24 sample job(s) get sample.batch_size 500"]
    assert "configurations: no GPU check of NVIDIA A100-SXM4-40GB" in report
    goal = next(line for line in report.splitlines() if line.startswith("goal: a 64 px run on 8 GPUs"))
    assert "the slowest, cbdm on" in goal
    assert "  train: DDP efficiency 0.90 on 8 GPUs (assumed)" in report.splitlines()


def test_the_cards_memory_comes_from_the_check_or_its_name():
    assert measured.card_memory_gb("NVIDIA A100-SXM4-40GB", None) == 40
    assert measured.card_memory_gb("NVIDIA H200", None) == 141
    assert measured.card_memory_gb(GPU, {"machine": {"gpu_memory_gb": 79.6}}) == 79.6
    with pytest.raises(config_module.ConfigError, match="cluster.gpu: 'Quadro K600' names no memory size"):
        measured.card_memory_gb("Quadro K600", None)


# ---------------------------------------------------------------- the fastest measured configuration

def test_the_paper_preset_runs_the_fastest_measured_configuration():
    """benchmarks/results/gpu_check-NVIDIA_H100_80GB_HBM3.json: every setting's training and sampling step
    in the paper preset's configuration is the fastest measured (within 5%). A new check that finds a faster
    one fails this until the preset is set to it."""
    model = plan.CostModel(resolved("paper"))
    settings = list(grid.settings(model.cfg))
    assert "it measured eager steps only" in plan_report.configuration_lines(model, settings)[1]
    found = plan_report.configurations(model, settings)
    assert len(found) == 5 * 2
    for row in found:
        time_key = measured.TIME_KEY[row["phase"]]
        assert row["own"] is not None and row["own"][time_key] <= 1.05 * row["fastest"][time_key], row


def test_the_report_names_a_faster_configuration_and_the_keys_to_set(tmp_path):
    cifar = {"image_size": 32, "objective": "ddpm", "layout": "nchw", "batch_size": 128, "flops_per_step": 4.8e12}
    write_benchmark(tmp_path, [{**cifar, "dtype": "fp32", "ms_per_step": 64.0},
                               {**cifar, "dtype": "bf16", "compile": True, "cuda_graphs": True, "ms_per_step": 30.0}],
                    SAMPLING)
    cfg = resolved("paper")
    cfg["data"]["settings"] = [{"dataset": "cifar10", "rho": 0.01}]
    lines = plan_report.configuration_lines(plan.CostModel(cfg, tmp_path), ["cifar10-rho0.01"])
    assert ("  cifar10-rho0.01: training fp32 nchw eager (64.0 ms at batch 128); the fastest measured is bf16 nchw "
            "compiled + CUDA graphs (30.0 ms): set train.bf16_autocast, train.compile, train.cuda_graphs") in lines
    assert "  cifar10-rho0.01: sampling fp32 nchw eager (300.0 ms at batch 1000): the fastest measured" in lines


def test_a_compiled_config_without_compiled_measurements_keeps_the_eager_figures_and_says_so(tmp_path):
    cfg = resolved("paper")
    cfg["train"]["compile"] = True
    run = grid.run_config(cfg, "cifar10-rho0.01", "ddpm", 0)
    write_benchmark(tmp_path, [{"image_size": 32, "objective": "ddpm", "dtype": "fp32", "layout": "nchw",
                                "batch_size": 128, "ms_per_step": 64.0,
                                "flops_per_step": flops.step_flops(run, 3, 10)["flops"]}], SAMPLING)
    cost = plan.CostModel(cfg, tmp_path).cost("train", {"setting": "cifar10-rho0.01", "variant": "ddpm"})
    assert cost.gpu_seconds == pytest.approx(800_000 * 0.064)
    assert any("32 px fp32 nchw eager batch 128 ddpm (nearest: compile False instead of True)" in source
               for source in cost.sources)


# ---------------------------------------------------------------- the pilot preset

def test_the_pilot_preset_costs_a_gpu_day_and_its_claims_table_covers_c1_to_c4():
    from coral.claims import registry
    report = plan_report.plan_report(config_module.load_yaml(REPO / "config.yaml"), "pilot",
                                     ["results/tables/claims.csv"])
    total = next(line.split() for line in report.splitlines() if line.startswith("total"))
    assert float(total[2]) <= 24  # H100-hours
    assert "WARNING" not in report
    cfg = resolved("pilot")
    assert cfg["ablations"]["studies"] == {}  # every study off: only the main runs' claims have runs
    assert [claim["id"] for claim in registry() if claim["runs"] == "main"] == ["C1", "C2", "C3", "C3-head", "C4"]
    assert (cfg["data"]["download"], cfg["evaluate"]["inception_download"]) == (True, True)  # no manual step
