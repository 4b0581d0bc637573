"""Training: EMA formula, warm-up, and resume after an interruption equals an uninterrupted run."""
import contextlib
import json
import shutil

import pytest
import torch

import coral.step as step_module
import coral.train as train_module
from coral.config import load
from coral.grid import run_config, setting_config
from coral.data import write_split
from coral.checkpoint import load as load_checkpoint
from coral.deadline import OutOfTime
from coral.checkpoint import load_model
from coral.step import ema_update
from coral.batches import DeviceBatches, batch_indices
from coral.train import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    cfg = load("config.yaml", preset="smoke")
    write_split(setting_config(cfg, "animals-rho0.1")["data"], 0.1, root / "split.npz", root / "counts.csv")
    return root, run_config(cfg, "animals-rho0.1", "coral", 0)


def test_ema_update_formula():
    ema, model = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    before = ema.weight.detach().clone()
    ema_update(ema, model, 0.9)
    assert torch.allclose(ema.weight, 0.9 * before + 0.1 * model.weight)


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(step, 10, 3, seed=0) for step in range(3)])  # 3 full batches of 10 images
    assert len(seen.unique()) == 9
    assert torch.equal(batch_indices(5, 10, 3, seed=0), batch_indices(5, 10, 3, seed=0))


def test_run_writes_stats_checkpoints_and_final(setup):
    root, run = setup
    final = train(run, root / "split.npz", root / "plain")
    stats = [json.loads(line) for line in open(root / "plain" / "stats.jsonl")]
    assert [s["step"] for s in stats] == [5, 10, 15, 20]
    assert {"loss", "mse", "supcon", "coral_term", "grad_norm", "lr"} <= set(stats[0])
    assert stats[0]["lr"] == pytest.approx(run["train"]["lr"])  # warm-up of 5 steps done at step 5
    state = load_checkpoint(final)
    assert state["step"] == 20 and state["config"] == run
    model, diffusion, cfg = load_model(final)
    assert not model.training and cfg == run


@contextlib.contextmanager
def crash_at_step(monkeypatch, step: int):
    """Training crashes (KeyboardInterrupt) in the `step`-th step, before its EMA update; undone on leaving."""
    calls = {"n": 0}
    original = step_module.ema_update

    def crashing(*args):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(step_module, "ema_update", crashing)
    try:
        yield
    finally:
        monkeypatch.setattr(step_module, "ema_update", original)


def test_interrupted_run_resumes_to_identical_weights(setup, monkeypatch):
    root, run = setup
    reference = load_checkpoint(train(run, root / "split.npz", root / "reference"))

    with pytest.raises(KeyboardInterrupt), crash_at_step(monkeypatch, 15):
        train(run, root / "split.npz", root / "resumed")
    assert not (root / "resumed" / "final.pt").exists()
    resumed = load_checkpoint(train(run, root / "split.npz", root / "resumed"))
    for key in ("model", "ema", "objective"):
        for name, tensor in reference[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    steps = [json.loads(line)["step"] for line in open(root / "resumed" / "stats.jsonl")]
    assert steps == [5, 10, 15, 20]  # the log has no duplicated lines from before the crash


def test_step_checkpoints_of_another_config_are_set_aside_and_taken_back(setup, monkeypatch):
    """A run whose step checkpoints were written for another config trains from step 0 (to the weights
    of a fresh run) and keeps them aside; the first config, run again, takes them back and resumes."""
    root, run = setup
    changed = {**run, "train": {**run["train"], "lr": 1e-2}}
    fresh = load_checkpoint(train(changed, root / "split.npz", root / "fresh-changed"))
    run_dir = root / "other"
    with pytest.raises(KeyboardInterrupt), crash_at_step(monkeypatch, 15):
        train(run, root / "split.npz", run_dir)  # leaves step 10
    trained = load_checkpoint(train(changed, root / "split.npz", run_dir))
    for name, tensor in fresh["ema"].items():
        assert torch.equal(tensor, trained["ema"][name]), f"{name}: not trained from step 0"
    aside = [path for path in (run_dir / "checkpoints").iterdir() if path.is_dir()]
    assert [path.name for path in aside[0].glob("*.pt")] == ["step-00000010.pt"]

    (run_dir / "final.pt").unlink()
    shutil.rmtree(run_dir / "kept")
    calls = {"n": 0}
    original = step_module.ema_update
    monkeypatch.setattr(step_module, "ema_update", lambda *args: calls.update(n=calls["n"] + 1) or original(*args))
    resumed = load_checkpoint(train(run, root / "split.npz", run_dir))
    assert calls["n"] == 10  # steps 11 to 20: resumed from the checkpoint set aside
    reference = load_checkpoint(train(run, root / "split.npz", root / "fresh-first"))
    for name, tensor in reference["ema"].items():
        assert torch.equal(tensor, resumed["ema"][name])


def test_a_setting_that_leaves_the_weights_alone_resumes(setup):
    """Logging, checkpoint cadence and TensorBoard are outside the run's identity: a step checkpoint
    written with other values is resumed, not set aside."""
    root, run = setup
    run = {**run, "train": {**run["train"], "prune_after_final": False}}
    train(run, root / "split.npz", root / "settings")
    (root / "settings" / "final.pt").unlink()
    shutil.rmtree(root / "settings" / "kept")
    relogged = {**run, "train": {**run["train"], "log_every": 10, "checkpoint_every": 5}}
    train(relogged, root / "split.npz", root / "settings")
    assert not [path for path in (root / "settings" / "checkpoints").iterdir() if path.is_dir()]


def test_damaged_newest_checkpoint_falls_back_to_the_previous(setup, caplog):
    root, run = setup
    run = {**run, "train": {**run["train"], "prune_after_final": False}}
    reference = load_checkpoint(train(run, root / "split.npz", root / "ref-damaged"))
    run_dir = root / "damaged"
    train(run, root / "split.npz", run_dir)
    (run_dir / "final.pt").unlink()
    shutil.rmtree(run_dir / "kept")  # no finished model to reuse: resume from the step checkpoints
    newest = run_dir / "checkpoints" / "step-00000020.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    with caplog.at_level("WARNING"):
        resumed = load_checkpoint(train(run, root / "split.npz", run_dir))
    assert "step-00000020.pt does not match its checksum" in caplog.text
    for name, tensor in reference["ema"].items():
        assert torch.equal(tensor, resumed["ema"][name])


@pytest.mark.slow  # trains in a subprocess, killed and rerun
def test_sigkill_mid_run_then_rerun_gives_identical_weights(tmp_path):
    """A training process killed with SIGKILL and started again ends with the uninterrupted weights."""
    import signal
    import subprocess
    import sys
    import time

    split = tmp_path / "split.npz"
    coral = [sys.executable, "-m", "coral"]
    subprocess.run(coral + ["subsample", "--preset", "smoke", "--out-split", str(split),
                            "--out-counts", str(tmp_path / "counts.csv")], check=True)
    config = tmp_path / "config.yaml"  # the smoke preset with a longer run
    config.write_text(open("config.yaml").read() + "\n".join([
        "", "  smoke_long:", "    data: {image_size: 8, settings: [{dataset: animals, rho: 0.1}]}",
        "    model: {ch: 32, ch_mult: [1, 2], attn: [], num_res_blocks: 1}",
        "    train: {steps: 200, batch_size: 16, warmup: 5, checkpoint_every: 20, log_every: 20}", ""]))
    cfg_args = ["--config", str(config), "--preset", "smoke_long", "--variant", "cbdm",
                "--split", str(split), "--threads", "1"]
    subprocess.run(coral + ["train", *cfg_args, "--run-dir", str(tmp_path / "whole")], check=True)

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(coral + ["train", *cfg_args, "--run-dir", str(killed_dir)])
    deadline = time.time() + 120
    while not list((killed_dir / "checkpoints").glob("step-00000060.pt*")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed_dir / "final.pt").exists(), "the run finished before it could be killed"
    subprocess.run(coral + ["train", *cfg_args, "--run-dir", str(killed_dir)], check=True)

    whole, resumed = load_checkpoint(tmp_path / "whole" / "final.pt"), load_checkpoint(killed_dir / "final.pt")
    for key in ("model", "ema"):
        for name, tensor in whole[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs"


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(setup, monkeypatch):
    root, run = setup
    original = train_module.training_step
    calls = {"n": 0}

    def nan_from_step_12(*args):
        calls["n"] += 1
        terms = original(*args)
        if calls["n"] >= 12:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(train_module, "training_step", nan_from_step_12)
    with pytest.raises(train_module.TrainingDiverged, match=r"loss is nan at step 15; kept the last good "
                                                           r"checkpoint .*step-00000010.pt"):
        train(run, root / "split.npz", root / "diverged")
    assert [p.name for p in (root / "diverged" / "checkpoints").glob("*.pt")] == ["step-00000010.pt"]
    assert not (root / "diverged" / "final.pt").exists()


def test_device_batches_serve_batch_indices():
    batches = DeviceBatches(10, 3, seed=4, device=torch.device("cpu"))
    for step in (0, 1, 2, 3, 7, 2):  # across epochs and back
        assert torch.equal(batches(step), batch_indices(step, 10, 3, seed=4))


def test_step_checkpoints_are_pruned_once_final_exists(setup):
    root, run = setup
    train(run, root / "split.npz", root / "pruned")
    assert (root / "pruned" / "final.pt").exists()
    assert list((root / "pruned" / "checkpoints").glob("step-*")) == []


def test_out_of_time_saves_and_the_next_job_continues_identically(setup):
    """A zero time budget stops every job after one step with a checkpoint; six jobs finish a
    six-step run with the weights of an uninterrupted one."""
    root, run = setup
    run = {**run, "train": {**run["train"], "steps": 6, "checkpoint_every": 4, "log_every": 4}}
    reference = load_checkpoint(train(run, root / "split.npz", root / "budget-ref"))
    run_dir = root / "budget"
    for job in range(5):
        with pytest.raises(OutOfTime, match=f"stopped at step {job + 1} of 6"):
            train(run, root / "split.npz", run_dir, time_budget=0)
        assert (run_dir / "checkpoints" / f"step-{job + 1:08d}.pt").exists()
    resumed = load_checkpoint(train(run, root / "split.npz", run_dir, time_budget=0))
    for name, tensor in reference["ema"].items():
        assert torch.equal(tensor, resumed["ema"][name])
    steps = [json.loads(line)["step"] for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert steps == [4, 6]
    # the last job ended at its limit (SLURM may count it TIMEOUT and Snakemake delete final.pt), so its
    # step checkpoints stay; without final.pt the next job links the kept model back, training nothing
    assert (run_dir / "checkpoints" / "step-00000006.pt").exists()
    (run_dir / "final.pt").unlink()
    rewritten = load_checkpoint(train(run, root / "split.npz", run_dir))
    for name, tensor in reference["ema"].items():
        assert torch.equal(tensor, rewritten["ema"][name])
    assert (run_dir / "stats.jsonl").read_text().count("\n") == 2
    assert list((run_dir / "checkpoints").glob("step-*")) == []  # in time now: pruned


def test_log_starts_with_a_header_and_ends_with_a_summary(setup, caplog):
    root, run = setup
    with caplog.at_level("INFO", logger="coral.train"):
        final = train(run, root / "split.npz", root / "logged")
    lines = [r.getMessage() for r in caplog.records if r.name == "coral.train"]
    assert lines[0].startswith("train run animals-rho0.1/coral/seed0: method coral")
    assert lines[1].startswith("device cpu, torch ")
    assert any(line.startswith("objective coral: ") and "tau_sc" in line for line in lines[:7])
    assert any(line.startswith("data: ") and " training images of 10 classes" in line for line in lines[:7])
    assert any("at step 0 (no step checkpoint" in line for line in lines[:7])
    assert any("schedule: 20 steps of batch size" in line for line in lines[:7])
    last_loss = json.loads((root / "logged" / "stats.jsonl").read_text().splitlines()[-1])["loss"]
    assert lines[-3] == f"finished at step 20 of 20: final loss {last_loss:.5g} (mean over steps 16-20)"
    assert lines[-2].startswith("this job trained steps 0 to 20 (20 steps) at a mean ")
    assert " img/s; wall time " in lines[-2] and lines[-2].endswith(" s")
    assert lines[-1] == f"final model written to {final}"


def test_tensorboard_gets_every_stats_line_and_sample_grids_without_changing_training(setup):
    """train.tensorboard_every = 10: the event file holds stats.jsonl's values at its steps and a grid of
    one image per class at steps 10 and 20; the weights equal those of a run without TensorBoard."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    root, run = setup
    plain = root / "plain" / "final.pt"
    if not plain.exists():
        train(run, root / "split.npz", root / "plain")
    logged = {**run, "train": {**run["train"], "tensorboard_every": 10}}
    final = train(logged, root / "split.npz", root / "board")
    for key in ("model", "ema"):
        for name, tensor in load_checkpoint(plain)[key].items():
            assert torch.equal(tensor, load_checkpoint(final)[key][name]), f"{key}.{name}"
    events = event_accumulator.EventAccumulator(str(root / "board" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    stats = [json.loads(line) for line in open(root / "board" / "stats.jsonl")]
    assert set(events.Tags()["scalars"]) == set(stats[0]) - {"step"}
    for name in ("loss", "supcon", "lr", "img_per_s"):
        assert [(e.step, e.value) for e in events.Scalars(name)] == \
            [(s["step"], pytest.approx(s[name], rel=1e-6)) for s in stats]
    grids = events.Images("samples")
    assert [g.step for g in grids] == [10, 20]
    side = run["data"]["image_size"] + 2  # make_grid pads 2 px around each image
    assert (grids[0].width, grids[0].height) == (2 + 8 * side, 2 + 2 * side)  # 10 classes in rows of 8
