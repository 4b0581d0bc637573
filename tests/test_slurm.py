"""The workflow on a real one-node SLURM cluster on this machine: the smoke preset through the profile as
shipped, and one training spread over several jobs by its time limit.

Both run on one cluster started once for the module (`cluster_runs`), and each test checks its own.
The training's partition limit is one minute (cluster.max_runtime_min: 1): each job reads the time it
has left from SLURM, stops with a checkpoint before the limit and exits 75; Snakemake resubmits it
(the train rule's retries) until the run is done. The weights must equal those of one uninterrupted
run. One local cluster runs at a time on a machine (slurm_cluster's lock)."""
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from coral.checkpoint import load as load_checkpoint
from coral.config import load_yaml
from coral.grid import deep_merge

from conftest import REPO
from slurm_cluster import local_slurm_cluster

pytestmark = pytest.mark.slow  # the workflow end to end

GPU_RULES = {"train", "sample", "evaluate", "latent", "train_classifier", "reference_features"}
PROFILE = REPO / "workflow" / "profiles" / "slurm"


def planned_jobs(output: str) -> list[tuple[str, dict]]:
    """(rule, resources) of each job of a dry run."""
    jobs = []
    for block in re.split(r"\n(?=rule |localrule )", output):
        match = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"resources: (.*)", block)
        if match and resources:
            jobs.append((match.group(1), dict(item.split("=", 1) for item in resources.group(1).split(", "))))
    return jobs


RUN = "results/runs/animals-rho0.1/ddpm/seed0"
# A one-minute job trains for at most 40 s (it stops 20 s before the limit, after a start of several
# seconds), so a training of 90 s needs three jobs or more on any machine. Its steps come from this
# machine's measured speed.
TRAINING_SECONDS = 90
OVERLAY = {"preset": "smoke", "cluster": {"max_runtime_min": 1, "max_mem_gb": 8, "spare_attempts": 12},
           "presets": {"smoke": {"train": {"checkpoint_every": 100000, "log_every": 100}}}}
# Statuses from squeue (a cluster without accounting, no sacct), checked from the first second.
STATUS = ["--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1"]


def write_config(path: Path, steps: int) -> Path:
    overlay = deep_merge(OVERLAY, {"presets": {"smoke": {"train": {"steps": steps}}}})
    path.write_text(yaml.safe_dump(deep_merge(load_yaml(REPO / "config.yaml"), overlay), sort_keys=False))
    return path


def steps_per_second(tmp_path: Path, split: Path) -> float:
    """This machine's smoke training speed at its fastest (the safe side), from a 400-step run's stats."""
    config = write_config(tmp_path / "calibrate.yaml", 400)
    subprocess.run([sys.executable, "-m", "coral", "train", "--config", str(config), "--threads", "1",
                    "--variant", "ddpm", "--split", str(split), "--run-dir", str(tmp_path / "calibrate")],
                   check=True, timeout=300)
    stats = [json.loads(line) for line in (tmp_path / "calibrate/stats.jsonl").read_text().splitlines()]
    batch_size = load_yaml(config)["presets"]["smoke"]["train"]["batch_size"]
    return max(record["img_per_s"] for record in stats[1:]) / batch_size  # the first 100 steps warm up


def spread_training_config(folder: Path) -> Path:
    """The split and config of a training that needs three jobs or more of one minute."""
    split = folder / "split.npz"
    subprocess.run([sys.executable, "-m", "coral", "subsample", "--config", str(REPO / "config.yaml"),
                    "--preset", "smoke", "--out-split", str(split), "--out-counts", str(folder / "counts.csv")],
                   check=True, timeout=300)
    # at least the steps an idle 2-core machine needs (about 31 steps/s): a calibration slowed by other
    # work must not shrink the training below three jobs once that work is done
    steps = max(2800, 100 * math.ceil(steps_per_second(folder, split) * TRAINING_SECONDS / 100))
    return write_config(folder / "config.yaml", steps)


def snakemake_in_background(workdir: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """Snakemake on `workdir`, its output going to a file beside it (no pipe to fill while it runs)."""
    workdir.mkdir(parents=True)
    output = workdir.parent / f"{workdir.name}.out"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args]
    with open(output, "w") as sink:
        return subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT), output


@pytest.fixture(scope="module")
def cluster_runs(tmp_path_factory, cluster_requirements) -> dict:
    """Both workflows of the module on one cluster at once; per name, (return code, output, workdir). The
    smoke jobs slow the spread training down, which only adds jobs to it (its steps are calibrated on an
    idle machine at the least)."""
    root = tmp_path_factory.mktemp("slurm")
    (root / "spread").mkdir()
    config = spread_training_config(root / "spread")
    reference = subprocess.Popen([sys.executable, "-m", "coral", "train", "--config", str(config), "--threads", "1",
                                  "--variant", "ddpm", "--split", str(root / "spread/split.npz"),
                                  "--run-dir", str(root / "spread/uninterrupted")])
    runs = {}
    with local_slurm_cluster(root / "cluster"):
        started = {name: (workdir, *snakemake_in_background(workdir, "--workflow-profile", str(PROFILE), *STATUS,
                                                           "--verbose", *args)) for name, workdir, args in [
            ("spread", root / "spread/work", ["--configfile", str(config), "--latency-wait", "5", f"{RUN}/final.pt"]),
            # what a new user runs: the profile as shipped (the default partition and account)
            ("smoke", root / "smoke", ["--configfile", str(REPO / "config.yaml"), "--slurm-keep-successful-logs",
                                       "results/tables/main.csv", "--config", "preset=smoke"])]}
        for name, (workdir, process, output) in started.items():
            try:
                code = process.wait(timeout=1200)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            runs[name] = (code, output.read_text(), workdir)
    assert reference.wait(timeout=600) == 0
    runs["uninterrupted"] = root / "spread/uninterrupted/final.pt"
    return runs


def test_smoke_preset_completes_on_slurm_with_the_unmodified_profile(cluster_runs):
    code, output, workdir = cluster_runs["smoke"]
    assert code == 0, output[-4000:]
    main = pd.read_csv(workdir / "results" / "tables" / "main.csv")
    assert main["method"].tolist() == ["ddpm", "cbdm", "t2h", "coral"]
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("rule_train" in str(path) for path in slurm_logs)
    calls = [line for line in output.splitlines() if "sbatch call:" in line]
    gpu_calls = Counter(re.search(r"rule_(\w+?)(?:_wildcards|\W|$)", line).group(1) for line in calls
                        if "--gpus=1" in line)
    assert {rule: gpu_calls[rule] for rule in ("train", "sample", "evaluate", "train_classifier")} == \
        {"train": 4, "sample": 4, "evaluate": 4, "train_classifier": 1}
    assert set(gpu_calls) <= GPU_RULES
    assert len(calls) > sum(gpu_calls.values())  # subsample, reference and the table ask for no GPU
    assert all(re.search(r" -t 1[05] ", line) and "--cpus-per-task=1" in line for line in calls), calls[:3]


def test_training_spans_jobs_by_its_time_limit(cluster_runs):
    code, output, workdir = cluster_runs["spread"]
    assert code == 0, output[-4000:]
    train_calls = [line for line in output.splitlines() if "sbatch call:" in line and "rule_train" in line]
    assert len(train_calls) >= 3, output[-4000:]
    # each job stopped itself before the limit (exit 75), none was killed at it, no final.pt was thrown away
    assert "SLURM status is: 'TIMEOUT'" not in output and "Removing output files of failed job" not in output
    assert all(re.search(r"(-t|--time) ?=?1\b", line) for line in train_calls), train_calls
    log = (workdir / "results/logs/train/animals-rho0.1/ddpm/seed0.log").read_text()  # the last job's log
    assert "resuming" in log
    whole, spread = load_checkpoint(cluster_runs["uninterrupted"]), load_checkpoint(workdir / RUN / "final.pt")
    for name, tensor in whole["ema"].items():
        assert torch.equal(tensor, spread["ema"][name]), name


def test_every_job_is_sized_by_the_plan_and_gpu_rules_declare_a_gpu(tmp_path):
    profile = yaml.safe_load(open(PROFILE / "config.yaml"))
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    for section in ("default-resources", "set-resources", "set-threads"):  # sizes come from coral's cost model
        assert not {"runtime", "mem_mb", "cpus_per_task"} & set(profile.get(section) or {}), section
    dry_run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                              "--configfile", str(REPO / "config.yaml"), "-n", "--config", "preset=smoke"],
                             capture_output=True, text=True, timeout=300)
    jobs = planned_jobs(dry_run.stdout)
    assert jobs, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    gpu_by_rule = {}  # rule -> whether its planned jobs ask for a GPU
    for rule, resources in jobs:
        if rule == "all":  # the default target: inputs only, never submitted
            continue
        gpu_by_rule.setdefault(rule, set()).add(resources.get("gpu") == "1")
        # the smoke preset asks for minutes, one CPU and a few GB; GPU jobs say how much GPU memory
        assert int(resources["runtime"]) <= 15 and resources["cpus_per_task"] == "1", (rule, resources)
        assert int(resources["mem_mb"]) <= 8 * 1024 and ("gpu_mem_gb" in resources) == (rule in GPU_RULES)
    assert {rule for rule, gpu in gpu_by_rule.items() if gpu == {True}} == GPU_RULES, dry_run.stdout[-3000:]
    assert gpu_by_rule["subsample"] == {False} and gpu_by_rule["main_table"] == {False}


def test_a_run_on_several_gpus_asks_for_them_on_one_node(tmp_path):
    """train.devices: 2 -> each training job asks for 2 GPUs (the SLURM plugin's `gpu`: --gpus) on one node,
    with the CPUs and memory of its two processes; the other jobs ask for what they did."""
    def jobs(*config):
        dry_run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                                  "--configfile", str(REPO / "config.yaml"), "-n", "--config", "preset=smoke", *config],
                                 capture_output=True, text=True, timeout=300)
        return planned_jobs(dry_run.stdout)

    one, two = jobs(), jobs("train={devices: 2}")

    def others(planned):
        return Counter((rule, tuple(sorted(asked.items()))) for rule, asked in planned if rule != "train")

    assert one and others(one) == others(two)
    trains, trains_two = ([asked for rule, asked in planned if rule == "train"] for planned in (one, two))
    assert trains and len(trains) == len(trains_two)
    assert {(asked["gpu"], asked["nodes"]) for asked in trains} == {("1", "1")}
    assert {(asked["gpu"], asked["nodes"]) for asked in trains_two} == {("2", "1")}
    # each process holds its own data and model: twice the CPUs, and twice the memory (each rounded up to a MB)
    pairs = zip(sorted((int(a["cpus_per_task"]), int(a["mem_mb"])) for a in trains),
                sorted((int(a["cpus_per_task"]), int(a["mem_mb"])) for a in trains_two))
    assert all(cpus_two == 2 * cpus and 2 * mem - 1 <= mem_two <= 2 * mem for (cpus, mem), (cpus_two, mem_two) in pairs)
