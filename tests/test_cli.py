"""`python -m coral`: stages run without Snakemake and write the workflow's artifacts."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO



def coral(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coral", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)


def test_check_config_and_bad_preset():
    assert "valid (preset 'smoke'" in coral("check-config", "--preset", "smoke").stdout
    bad = coral("check-config", "--preset", "huge")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "config error: preset: 'huge' is not defined under presets; allowed: embedded, smoke, claims, paper, pilot, rehearsal"


def test_subsample_then_train_one_run(tmp_path):
    split, counts = tmp_path / "split.npz", tmp_path / "counts.csv"
    assert coral("subsample", "--preset", "smoke", "--setting", "animals-rho0.1", "--out-split", str(split),
                 "--out-counts", str(counts)).returncode == 0
    rows = list(csv.DictReader(open(counts)))
    assert [int(r["count"]) for r in rows][:2] == [1000, 774]  # int(1000 * 0.1 ** (1/9))
    result = coral("train", "--preset", "smoke", "--variant", "t2h", "--split", str(split),
                   "--run-dir", str(tmp_path / "run"), "--log", str(tmp_path / "train.log"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "final.pt").exists() and "train" in (tmp_path / "train.log").read_text()


def test_a_jobs_threads_cap_torch_and_the_blas_pools():
    """A job given one thread (a rule's `threads`) must not let numpy's or scikit-learn's BLAS take every core."""
    script = ("import json, numpy, sklearn.cluster, torch, threadpoolctl; from coral.cli import setup_job; "
              "setup_job(None, 1); "
              "print(json.dumps([torch.get_num_threads()] + [p['num_threads'] for p in threadpoolctl.threadpool_info()]))")
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    threads = json.loads(out.stdout)
    assert len(threads) >= 2 and set(threads) == {1}, (threads, out.stderr[-2000:])


def test_stages_read_their_settings_dataset_overrides(tmp_path, monkeypatch):
    """A stage run by hand sees a setting's config as the workflow does: its dataset's overrides merged in."""
    from coral import cli
    from coral.config import load_yaml
    from coral.grid import deep_merge
    overrides = {"dataset_overrides": {"animals": {"sample": {"batch_size": 7}, "evaluate": {"kid_subsets": 3},
                                                   "latent": {"per_class": 2}, "classifier": {"width": 8}}}}
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps(deep_merge(load_yaml(REPO / "config.yaml"), overrides)))
    seen = {}
    monkeypatch.setattr("coral.sample.sample", lambda checkpoint, cfg, *rest: seen.update(sample=cfg.batch_size))
    monkeypatch.setattr("coral.metrics.evaluate", lambda samples, ref, split, clf, cfg, *rest:
                        seen.update(evaluate=cfg.kid_subsets))
    monkeypatch.setattr("coral.latent.run_latent", lambda checkpoint, split, ref, cfg, *rest:
                        seen.update(latent=cfg.per_class))
    monkeypatch.setattr("coral.classifier.train_classifier", lambda ref, cfg, *rest: seen.update(classifier=cfg.width))
    common = ["--config", str(config), "--preset", "smoke", "--setting", "animals-rho0.1"]
    for argv in (["sample", "--checkpoint", "c", "--out-npz", "o", "--out-png", "p"],
                 ["evaluate", "--samples", "s", "--reference", "r", "--split", "x", "--classifier", "c",
                  "--out-json", "j", "--out-per-class", "p"],
                 ["latent", "--checkpoint", "c", "--split", "x", "--reference", "r", "--out-npz", "o",
                  "--out-json", "j"],
                 ["train-classifier", "--reference", "r", "--out-checkpoint", "c", "--out-json", "j"]):
        args = cli.build_parser().parse_args(argv[:1] + common + argv[1:])
        args.func(args)
    assert seen == {"sample": 7, "evaluate": 3, "latent": 2, "classifier": 8}


def test_version_is_the_packages_one():
    from coral import __version__
    assert coral("--version").stdout.strip() == f"coral {__version__}"
    script = Path(sys.executable).with_name("coral")  # the console script of the install
    if script.exists():
        out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == f"coral {__version__}", out.stderr


def test_every_argument_of_every_command_has_help():
    import argparse
    from coral import cli

    def actions(parser, where):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            yield where, action
            if isinstance(action, argparse._SubParsersAction):
                for choice in action._choices_actions:  # the commands' own lines in `coral --help`
                    yield where, choice
                for name, sub in action.choices.items():
                    yield from actions(sub, f"{where} {name}")

    found = list(actions(cli.build_parser(), "coral"))
    missing = [f"{where} {'/'.join(a.option_strings) or a.dest}" for where, a in found
               if not (a.help or "").strip() or a.help == argparse.SUPPRESS]
    assert not missing, missing
    assert len(found) > 60  # the walk reached every command


def _cli_config(*argv):
    from coral import cli
    return cli._config(cli.build_parser().parse_args(["check-config", *argv]))


def test_configfiles_merge_over_config_yaml_in_order(tmp_path):
    """--configfile FILE... is merged over config.yaml as Snakemake merges its --configfile over the
    Snakefile's configfile: deep for mappings, replacing lists, later files winning."""
    import pytest
    from coral.config import ConfigError
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("seeds: [0, 1, 2]\ntrain: {lr: 0.001}\npresets: {mine: {seeds: [5]}}\n")
    second.write_text("seeds: [3]\n")
    base = _cli_config("--preset", "embedded")
    cfg = _cli_config("--preset", "embedded", "--configfile", str(first), str(second))
    assert cfg["seeds"] == [3] and cfg["train"]["lr"] == 0.001
    assert {k: v for k, v in cfg["train"].items() if k != "lr"} == {k: v for k, v in base["train"].items() if k != "lr"}
    assert _cli_config("--configfile", str(second), "--configfile", str(first), "--preset", "embedded")["seeds"] == [0, 1, 2]
    assert _cli_config("--configfiles", str(first), "--preset", "mine")["seeds"] == [5]
    # An unknown preset lists those of the merged config, the overlay's included.
    with pytest.raises(ConfigError, match="'huge' is not defined under presets; allowed: embedded, smoke, claims, paper, "
                                          "pilot, rehearsal, mine$"):
        _cli_config("--configfile", str(first), "--preset", "huge")
    # A partial file given as the base config says how to merge it instead.
    with pytest.raises(ConfigError, match=f"use --configfile {second}$"):
        _cli_config("--config", str(second))


def test_an_unknown_preset_with_an_overlay_is_one_line(tmp_path):
    overlay = tmp_path / "mine.yaml"
    overlay.write_text("seeds: [0]\n")
    bad = coral("check-config", "--configfile", str(overlay), "--preset", "huge")
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("config error: preset: 'huge' is not defined under presets; allowed: embedded, "
                                  "smoke, claims, paper, pilot, rehearsal")
    good = coral("check-config", "--configfile", str(overlay), "--preset", "smoke")
    assert good.returncode == 0 and good.stdout.startswith(f"config.yaml + {overlay}: valid (preset 'smoke'")


def test_check_config_warns_of_each_key_of_yours_the_preset_overrides(tmp_path):
    """A preset's keys win over an overlay's; check-config says so, key by key, before its valid line."""
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("train: {steps: 30, batch_size: 16, lr: 0.001}\n"  # smoke: steps 20, batch_size 16, no lr
                       "data: {settings: [{dataset: animals, rho: 0.1}, {dataset: cifar10, rho: 0.01}]}\n")
    result = coral("check-config", "--configfile", str(overlay), "--preset", "smoke")
    assert result.returncode == 0 and result.stdout.startswith(f"config.yaml + {overlay}: valid (preset 'smoke'")
    assert result.stderr.splitlines() == [
        "warning: data.settings: your setting cifar10-rho0.01 is not trained: presets.smoke.data.settings replaces "
        "the list (animals-rho0.1); to train it, set data.settings under presets.smoke or choose another preset",
        "warning: train.steps: your 30 loses to presets.smoke.train.steps = 20; to keep yours, set train.steps under "
        "presets.smoke or choose another preset"]
    # a preset's dataset_overrides win over your keys and over your own dataset_overrides
    overlay.write_text("train: {steps: 30}\ndataset_overrides: {animals: {sample: {batch_size: 50}}}\n"
                       "presets: {mine: {dataset_overrides: {animals: {train: {steps: 7}, sample: {batch_size: 10}}}}}\n")
    result = coral("check-config", "--configfile", str(overlay), "--preset", "mine")
    assert result.returncode == 0 and [line.split(";")[0] for line in result.stderr.splitlines()] == [
        "warning: dataset_overrides.animals.sample.batch_size: your 50 loses to "
        "presets.mine.dataset_overrides.animals.sample.batch_size = 10",
        "warning: train.steps: your 30 loses to presets.mine.dataset_overrides.animals.train.steps = 7"]
