"""One training run spread over several SLURM jobs by its time limit, on a real one-node cluster.

The partition limit is one minute (cluster.max_runtime_min: 1): each job reads the time it has left
from SLURM, stops with a checkpoint before the limit and exits 75; Snakemake resubmits it (the train
rule's retries) until the run is done. The weights must equal those of one uninterrupted run.
"""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from coral.checkpoint import load as load_checkpoint
from coral.config import deep_merge, load_yaml
from slurm_cluster import local_slurm_cluster

REPO = Path(__file__).resolve().parent.parent
RUN = "results/runs/animals-rho0.1/ddpm/seed0"
# A one-minute job trains for at most 40 s (it stops 20 s before the limit, after a start of several
# seconds), so a training of 90 s needs three jobs or more on any machine. Its steps come from this
# machine's measured speed.
TRAINING_SECONDS = 90
OVERLAY = {"preset": "smoke", "cluster": {"max_runtime_min": 1, "max_mem_gb": 8, "spare_attempts": 12},
           "presets": {"smoke": {"train": {"checkpoint_every": 100000, "log_every": 100}}}}


def write_config(path: Path, steps: int) -> Path:
    overlay = deep_merge(OVERLAY, {"presets": {"smoke": {"train": {"steps": steps}}}})
    path.write_text(yaml.safe_dump(deep_merge(load_yaml(REPO / "config.yaml"), overlay), sort_keys=False))
    return path


def steps_per_second(tmp_path: Path, split: Path) -> float:
    """This machine's smoke training speed at its fastest (the safe side), from a 400-step run's stats."""
    config = write_config(tmp_path / "calibrate.yaml", 400)
    subprocess.run([sys.executable, "-m", "coral", "train", "--config", str(config), "--threads", "1",
                    "--method", "ddpm", "--split", str(split), "--run-dir", str(tmp_path / "calibrate")],
                   check=True, timeout=300)
    stats = [json.loads(line) for line in (tmp_path / "calibrate/stats.jsonl").read_text().splitlines()]
    batch_size = load_yaml(config)["presets"]["smoke"]["train"]["batch_size"]
    return max(record["img_per_s"] for record in stats[1:]) / batch_size  # the first 100 steps warm up


def test_training_spans_jobs_by_its_time_limit(tmp_path, cluster_requirements):
    split = tmp_path / "split.npz"
    subprocess.run([sys.executable, "-m", "coral", "subsample", "--config", str(REPO / "config.yaml"),
                    "--preset", "smoke", "--out-split", str(split), "--out-counts", str(tmp_path / "counts.csv")],
                   check=True, timeout=300)
    # at least the steps an idle 2-core machine needs (about 31 steps/s): a calibration slowed by other
    # work must not shrink the training below three jobs once that work is done
    steps = max(2800, 100 * math.ceil(steps_per_second(tmp_path, split) * TRAINING_SECONDS / 100))
    config = write_config(tmp_path / "config.yaml", steps)
    reference = subprocess.Popen([sys.executable, "-m", "coral", "train", "--config", str(config), "--threads", "1",
                                  "--method", "ddpm", "--split", str(split), "--run-dir", str(tmp_path / "reference")])
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
    assert len(train_calls) >= 3, (steps, output[-4000:])
    # each job stopped itself before the limit (exit 75), none was killed at it, no final.pt was thrown away
    assert "SLURM status is: 'TIMEOUT'" not in output and "Removing output files of failed job" not in output
    assert all(re.search(r"(-t|--time) ?=?1\b", line) for line in train_calls), train_calls
    log = (workdir / "results/logs/train/animals-rho0.1/ddpm/seed0.log").read_text()  # the last job's log
    assert "resuming" in log
    whole, spread = load_checkpoint(tmp_path / "reference/final.pt"), load_checkpoint(workdir / RUN / "final.pt")
    for name, tensor in whole["ema"].items():
        assert torch.equal(tensor, spread["ema"][name]), name
