"""Training: EMA formula, warm-up, and resume after an interruption equals an uninterrupted run."""
import json

import pytest
import torch

import coral.train as train_module
from coral.config import load, run_config
from coral.data import write_split
from coral.train import batch_indices, ema_update, load_checkpoint, load_model, train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    cfg = load("config.yaml", preset="smoke")
    write_split(cfg["data"], 0.1, root / "split.npz", root / "counts.csv")
    return root, run_config(cfg, "animals", 0.1, "coral", 0)


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


def test_interrupted_run_resumes_to_identical_weights(setup, monkeypatch):
    root, run = setup
    reference = load_checkpoint(train(run, root / "split.npz", root / "reference"))

    calls = {"n": 0}
    original = train_module.ema_update

    def crash_at_step_15(*args):
        calls["n"] += 1
        if calls["n"] == 15:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(train_module, "ema_update", crash_at_step_15)
    with pytest.raises(KeyboardInterrupt):
        train(run, root / "split.npz", root / "resumed")
    assert not (root / "resumed" / "final.pt").exists()
    monkeypatch.setattr(train_module, "ema_update", original)
    resumed = load_checkpoint(train(run, root / "split.npz", root / "resumed"))
    for key in ("model", "ema", "objective"):
        for name, tensor in reference[key].items():
            assert torch.equal(tensor, resumed[key][name]), f"{key}.{name} differs after resume"
    steps = [json.loads(line)["step"] for line in open(root / "resumed" / "stats.jsonl")]
    assert steps == [5, 10, 15, 20]  # the log has no duplicated lines from before the crash


def test_resume_with_another_config_refuses(setup):
    root, run = setup
    train(run, root / "split.npz", root / "other")
    changed = {**run, "train": {**run["train"], "lr": 1e-2}}
    with pytest.raises(ValueError, match="another config"):
        train(changed, root / "split.npz", root / "other")
