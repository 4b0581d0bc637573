"""One run on two processes (train.devices: 2, gloo on the CPU): it reproduces one process up to rounding,
with a batch term (CORAL) and micro-batches too; rank 0 alone writes; a stop for the time limit stops both
ranks at one step, and the next job resumes, also from a checkpoint of one process."""
import json

import pytest
import torch

from coral.checkpoint import load as load_checkpoint
from coral.config import load
from coral.grid import run_config, setting_config
from coral.data import write_split
from coral.deadline import OutOfTime
from coral.train import train

# Weights after 20 steps of Adam (lr 5e-4, so at most 1e-2 from where they started), with dropout 0 in
# fp32: two processes sum the gradient in another order, which Adam's normalisation carries into the
# small weights' updates; the EMA averages it away.
WEIGHTS_ATOL, EMA_ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    cfg = load("config.yaml", preset="smoke")
    write_split(setting_config(cfg, "animals-rho0.1")["data"], 0.1, root / "split.npz", root / "counts.csv")
    return root, cfg


def exact(cfg, method, **train_keys):
    """The smoke run of `method` without dropout, in fp32, so a split batch reproduces a whole one to rounding."""
    run = run_config(cfg, "animals-rho0.1", method, 0)
    run["model"] = {**run["model"], "dropout": 0.0}
    run["train"] = {**run["train"], "bf16_autocast": False, **train_keys}
    return run


def max_differences(a: dict, b: dict) -> dict:
    return {key: max(float((a[key][name] - b[key][name]).abs().max()) for name in a[key]) for key in ("model", "ema")}


@pytest.mark.parametrize("method,micro_batch_size", [("ddpm", 0), ("coral", 0), ("coral", 4)])
def test_two_processes_reproduce_one(setup, method, micro_batch_size, capfd):
    root, cfg = setup
    one = load_checkpoint(train(exact(cfg, method), root / "split.npz", root / f"one-{method}"))
    run_dir = root / f"two-{method}-{micro_batch_size}"
    two = load_checkpoint(train(exact(cfg, method, devices=2, micro_batch_size=micro_batch_size), root / "split.npz",
                                run_dir))
    differences = max_differences(one, two)
    assert differences["model"] < WEIGHTS_ATOL and differences["ema"] < EMA_ATOL, differences
    assert two["config"]["train"]["devices"] == 2 and two["identity"] == one["identity"]
    # rank 0 alone writes: one stats line per log step, with the terms of the global batch
    stats = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [s["step"] for s in stats] == [5, 10, 15, 20]
    ones = [json.loads(line) for line in (root / f"one-{method}" / "stats.jsonl").read_text().splitlines()]
    assert stats[-1]["loss"] == pytest.approx(ones[-1]["loss"], rel=1e-4)
    log = capfd.readouterr().err
    assert "2 processes (DDP, one per device; this is rank 0)" in log
    assert "schedule: 20 steps of batch size 16 (8 per process" in log


@pytest.mark.slow  # four launches of two processes
def test_a_stop_for_the_time_limit_stops_both_ranks_and_the_next_jobs_resume(setup):
    """A zero time budget stops every job after one step, with one checkpoint (rank 0's); three jobs of two
    processes finish a three-step run with the weights of an uninterrupted one."""
    root, cfg = setup
    run = exact(cfg, "coral", devices=2, steps=3, checkpoint_every=10, log_every=1)
    reference = load_checkpoint(train(run, root / "split.npz", root / "budget-ref"))
    run_dir = root / "budget"
    for job in range(2):
        with pytest.raises(OutOfTime, match=f"stopped at step {job + 1} of 3"):
            train(run, root / "split.npz", run_dir, time_budget=0)
        assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.pt"))[-1] == f"step-{job + 1:08d}.pt"
    resumed = load_checkpoint(train(run, root / "split.npz", run_dir, time_budget=0))
    for key in ("model", "ema"):
        for name, tensor in reference[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name}"
    assert [json.loads(line)["step"] for line in (run_dir / "stats.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_two_processes_resume_a_checkpoint_of_one(setup):
    """train.devices is outside the run's identity: a job of two processes continues a run one process
    started, to its weights up to rounding."""
    root, cfg = setup
    one = exact(cfg, "ddpm", steps=6, checkpoint_every=3, log_every=3)
    reference = load_checkpoint(train(one, root / "split.npz", root / "switch-ref"))
    run_dir = root / "switch"
    with pytest.raises(OutOfTime, match="stopped at step 1 of 6"):
        train(one, root / "split.npz", run_dir, time_budget=0)
    resumed = load_checkpoint(train({**one, "train": {**one["train"], "devices": 2}}, root / "split.npz", run_dir))
    differences = max_differences(reference, resumed)
    assert differences["model"] < WEIGHTS_ATOL and differences["ema"] < EMA_ATOL, differences
