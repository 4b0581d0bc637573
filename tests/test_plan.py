"""The cost model and `coral plan`: FLOP counts, the GPU benchmark reader, SLURM resources, job counts."""
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from coral import config as config_module
from coral import plan
from coral.cli import main

REPO = Path(__file__).resolve().parent.parent
GPU = "NVIDIA H100 80GB HBM3"
TINY = {"ch": 32, "ch_mult": [1], "attn": [], "num_res_blocks": 1, "dropout": 0.0}


def resolved(preset: str, **cluster) -> dict:
    cfg = plan.resolve_unchecked(config_module.load_yaml(REPO / "config.yaml"), preset)
    cfg["cluster"].update(gpu=GPU, **cluster)
    return cfg


def write_benchmark(folder: Path, training: list[dict], sampling: list[dict]) -> Path:
    path = folder / "gpu_check-NVIDIA_H100_80GB_HBM3.json"
    path.write_text(json.dumps({"machine": {"gpu": GPU}, "peak_bf16_flops": 9.89e14,
                                "training": training, "sampling": sampling}))
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
    assert plan.unet_forward(json.dumps(TINY), size, 1, 2)["flops_per_image"] == expected


def test_objectives_add_their_own_flops_to_the_network():
    cfg = resolved("smoke")
    batch, size, channels = 4, 4, 1

    def step(method):
        run = config_module.run_config(cfg, "animals-rho0.1", method, 0)
        run["model"], run["data"]["image_size"], run["train"]["batch_size"] = TINY, size, batch
        return run, plan.training_step(run, channels, 10)["flops"]

    _, ddpm = step("ddpm")
    assert step("cbdm")[1] == 2 * ddpm  # one forward and backward of the doubled batch
    assert step("t2h")[1] - ddpm == 3 * batch * batch * channels * size * size  # cdist of the batch
    run, coral = step("coral")
    bottleneck, proj = TINY["ch"] * TINY["ch_mult"][-1], run["objective"]["hparams"]["proj_dim"]
    # projection head: forward, weight and input gradients; SupCon's z z^T: forward and two gradients
    assert coral - ddpm == 3 * 2 * batch * bottleneck * proj + 3 * 2 * batch * batch * proj


# ---------------------------------------------------------------- the benchmark

def test_reader_picks_the_matching_entry_or_the_nearest(tmp_path):
    entries = [training_entry(size, dtype, layout, "ddpm", ms) for size, dtype, layout, ms in
               [(32, "fp32", "nchw", 64), (32, "bf16", "nchw", 80), (64, "fp32", "nchw", 180),
                (64, "bf16", "channels_last", 190)]]
    data = plan.read_benchmark(write_benchmark(tmp_path, entries, SAMPLING))
    want = {"image_size": 64, "dtype": "fp32", "layout": "nchw", "batch_size": 128, "objective": "ddpm"}
    assert plan.pick_entry(data["training"], want) == (entries[2], [])
    entry, differences = plan.pick_entry(data["training"], {**want, "image_size": 48, "dtype": "bf16"})
    assert entry == entries[1] and differences == ["image_size 32 instead of 48"]  # precision before size
    entry, differences = plan.pick_entry(data["training"], {**want, "objective": "cbdm"})
    assert entry == entries[2] and differences == ["objective ddpm instead of cbdm"]


def test_train_time_is_measured_when_the_benchmark_has_the_step_and_flops_otherwise(tmp_path):
    cfg = resolved("paper")
    cfg["train"].update(bf16_autocast=False, channels_last=False)
    write_benchmark(tmp_path, [training_entry(32, "fp32", "nchw", "ddpm", 64.0, memory=7.0)], SAMPLING)
    model = plan.CostModel(cfg, tmp_path)
    exact = model.cost("train", {"setting": "cifar10-rho0.01", "variant": "ddpm"})
    assert exact.gpu_seconds == pytest.approx(cfg["train"]["steps"] * 0.064)
    assert exact.gpu_memory_gb == pytest.approx(7.0 + plan.CUDA_CONTEXT_GB)
    # CBDM: no entry of its own, so its counted FLOPs at the DDPM entry's 100 TFLOP/s
    cbdm = model.cost("train", {"setting": "cifar10-rho0.01", "variant": "cbdm"})
    run = config_module.run_config(cfg, "cifar10-rho0.01", "cbdm", 0)
    flops = plan.training_step(run, 3, 10)["flops"]
    assert cbdm.gpu_seconds == pytest.approx(cfg["train"]["steps"] * flops / 100e12)
    assert "nearest: objective ddpm instead of cbdm" in " ".join(cbdm.sources)
    # sampling: the entry's measured time per denoising step, 1000 ancestral steps, 50 batches
    sample = model.cost("sample", {"setting": "cifar10-rho0.01", "variant": "ddpm", "omega": "1.0"})
    assert sample.gpu_seconds == pytest.approx(cfg["sample"]["num_samples"] / 1000 * 1000 * 0.3)


def test_sampling_time_is_the_compiled_steps_with_sample_compile(tmp_path):
    cfg = resolved("paper")
    compiled = {**SAMPLING[0], "step": "compiled_cuda_graphs", "ms_per_denoising_step": 120.0}
    skipped = {**{key: SAMPLING[0][key] for key in ("image_size", "dtype", "layout", "batch_size")},
               "step": "compiled", "skipped": "time limit of the check"}  # not measured: left out
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
    with pytest.raises(config_module.ConfigError, match=r"cluster.gpu: .*gpu_check-NVIDIA.* no 'training' entries"):
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

def test_plan_counts_the_jobs_of_the_paper_main_table_without_datasets(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no data/ here: the dry run uses stand-ins
    counts = Counter(rule for rule, _ in plan.dag_jobs(resolved("paper"), [plan.DEFAULT_TARGET]))
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
