"""The smoke preset through the SLURM profile on a real one-node SLURM cluster on this machine."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm_cluster import local_slurm_cluster, missing_requirements

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cluster_requirements():
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):  # CI installs SLURM: there the test must run
            pytest.fail(f"no SLURM cluster can be started: {reason}")
        pytest.skip(reason)


def test_gpu_rules_declare_a_gpu_and_the_profile_grows_with_attempts(tmp_path):
    profile = yaml.safe_load(open(REPO / "workflow/profiles/slurm/config.yaml"))
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    for rule in ("train", "sample", "evaluate"):
        assert "attempt" in profile["set-resources"][rule]["runtime"]
    assert "gpu" not in profile["default-resources"]  # CPU rules stay small
    dry_run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                              "--configfile", str(REPO / "config.yaml"), "-n", "--config", "preset=smoke"],
                             capture_output=True, text=True, timeout=300)
    gpu_by_rule = {}  # rule -> whether its planned jobs ask for a GPU
    for block in re.split(r"\n(?=rule |localrule )", dry_run.stdout):
        match = re.match(r"(?:local)?rule (\w+):", block)
        resources = re.search(r"resources: (.*)", block)
        if match and resources:
            gpu_by_rule.setdefault(match.group(1), set()).add("gpu=1" in resources.group(1))
    assert {rule for rule, gpu in gpu_by_rule.items() if gpu == {True}} == \
        {"train", "sample", "evaluate", "latent", "train_classifier"}, dry_run.stdout[-3000:]
    assert gpu_by_rule["subsample"] == {False} and gpu_by_rule["main_table"] == {False}


def test_smoke_preset_completes_on_slurm(tmp_path, cluster_requirements):
    profile = yaml.safe_load(open(REPO / "workflow/profiles/slurm/config.yaml"))
    # The real profile, fitted to a 2-core test node: its partition, and small memory and CPU asks.
    profile["default-resources"].update(slurm_partition="debug", mem_mb="1000 * attempt", cpus_per_task=1)
    for resources in profile["set-resources"].values():
        resources.update(mem_mb="1000 * attempt", cpus_per_task=1)
    profile.pop("set-threads", None)
    profile["latency-wait"] = 5
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(yaml.safe_dump(profile))
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(REPO / "config.yaml"), "--config", "preset=smoke",
               "--workflow-profile", str(tmp_path / "profile"), "--slurm-status-command", "squeue",
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
    gpu_calls = [line for line in calls if "--gpus=1" in line]
    assert len(gpu_calls) == 4 + 4 + 4 + 1  # train, sample, evaluate, train_classifier
    assert len(calls) > len(gpu_calls)  # subsample, reference and the table ask for no GPU
