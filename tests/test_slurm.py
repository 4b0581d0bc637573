"""The smoke preset through the SLURM profile on a real one-node SLURM cluster on this machine."""
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import yaml

from slurm_cluster import local_slurm_cluster

REPO = Path(__file__).resolve().parent.parent


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


def test_smoke_preset_completes_on_slurm_with_the_unmodified_profile(tmp_path, cluster_requirements):
    # What a new user runs: the profile as shipped (the cluster's default partition and the user's
    # default account), plus the status command of a cluster without accounting (no sacct).
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(REPO / "config.yaml"), "--config", "preset=smoke",
               "--workflow-profile", str(PROFILE), "--slurm-status-command", "squeue",
               "--slurm-init-seconds-before-status-checks", "1", "--slurm-keep-successful-logs", "--verbose",
               "results/tables/main.csv"]
    with local_slurm_cluster(tmp_path / "cluster"):
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    main = pd.read_csv(workdir / "results" / "tables" / "main.csv")
    assert main["method"].tolist() == ["ddpm", "cbdm", "t2h", "coral"]
    slurm_logs = list((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    assert any("rule_train" in str(path) for path in slurm_logs)
    calls = [line for line in (result.stdout + result.stderr).splitlines() if "sbatch call:" in line]
    gpu_calls = Counter(re.search(r"rule_(\w+?)(?:_wildcards|\W|$)", line).group(1) for line in calls
                        if "--gpus=1" in line)
    assert {rule: gpu_calls[rule] for rule in ("train", "sample", "evaluate", "train_classifier")} == \
        {"train": 4, "sample": 4, "evaluate": 4, "train_classifier": 1}
    assert set(gpu_calls) <= GPU_RULES
    assert len(calls) > sum(gpu_calls.values())  # subsample, reference and the table ask for no GPU
    assert all(re.search(r" -t 1[05] ", line) and "--cpus-per-task=1" in line for line in calls), calls[:3]
