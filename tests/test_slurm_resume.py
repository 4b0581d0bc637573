"""One training run spread over several SLURM jobs by its time limit, on a real one-node cluster.

The partition limit is one minute (cluster.max_runtime_min: 1): each job reads the time it has left
from SLURM, stops with a checkpoint before the limit and exits 75; Snakemake resubmits it (the train
rule's retries) until the run is done. The weights must equal those of one uninterrupted run.
"""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from coral.checkpoint import load as load_checkpoint
from coral.config import deep_merge, load_yaml
from slurm_cluster import local_slurm_cluster

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.xdist_group("slurm")  # one local SLURM cluster at a time
RUN = "results/runs/animals-rho0.1/ddpm/seed0"
# About 65 s of training at this size on an idle core (30 steps/s); a one-minute job trains for about
# 27 s of it (it starts in about 12 s and stops 20 s before the limit), so at least three jobs.
OVERLAY = {"preset": "smoke", "cluster": {"max_runtime_min": 1, "spare_attempts": 12},
           "presets": {"smoke": {"train": {"steps": 2000, "checkpoint_every": 100000, "log_every": 100}}}}


def test_training_spans_jobs_by_its_time_limit(tmp_path, cluster_requirements):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(deep_merge(load_yaml(REPO / "config.yaml"), OVERLAY), sort_keys=False))
    coral = [sys.executable, "-m", "coral", "--config", str(config)]  # the uninterrupted reference, beside it
    subprocess.run(coral[:3] + ["subsample", *coral[3:], "--out-split", str(tmp_path / "split.npz"),
                                "--out-counts", str(tmp_path / "counts.csv")], check=True, timeout=300)
    reference = subprocess.Popen(coral[:3] + ["train", *coral[3:], "--threads", "1", "--method", "ddpm",
                                              "--split", str(tmp_path / "split.npz"),
                                              "--run-dir", str(tmp_path / "reference")])
    workdir = tmp_path / "work"
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(config), "--workflow-profile", str(REPO / "workflow/profiles/slurm"),
               "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
               "--latency-wait", "5", "--verbose", f"{RUN}/final.pt"]
    with local_slurm_cluster(tmp_path / "cluster"):
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert reference.wait(timeout=600) == 0
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    train_calls = [line for line in output.splitlines() if "sbatch call:" in line and "rule_train" in line]
    assert len(train_calls) >= 3, output[-4000:]
    assert all(re.search(r"(-t|--time) ?=?1\b", line) for line in train_calls), train_calls
    log = (workdir / "results/logs/train/animals-rho0.1/ddpm/seed0.log").read_text()  # the last job's log
    assert "resuming" in log
    whole, spread = load_checkpoint(tmp_path / "reference/final.pt"), load_checkpoint(workdir / RUN / "final.pt")
    for name, tensor in whole["ema"].items():
        assert torch.equal(tensor, spread["ema"][name]), name
