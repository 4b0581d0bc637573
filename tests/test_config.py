"""Config validation: every typo stops with one line naming the key and what is allowed."""
import copy

import pytest
import yaml

from coral.config import ConfigError, load, resolve, run_config

BASE = yaml.safe_load(open("config.yaml"))


def resolve_with(edit):
    raw = copy.deepcopy(BASE)
    edit(raw)
    return resolve(raw)


@pytest.mark.parametrize("edit,expected", [
    (lambda c: c["train"].update(stepz=5), "unknown key train.stepz"),
    (lambda c: c.update(tarin={}), "unknown key tarin"),
    (lambda c: c["train"].update(steps="many"), "train.steps: 'many' is not of type 'integer'"),
    (lambda c: c["train"].update(lr=-1), "train.lr: -1"),
    (lambda c: c.update(methods=["ddpm", "coarl"]), "methods[1]: 'coarl' is not allowed; allowed: ddpm, cbdm"),
    (lambda c: c["data"].update(dataset="cifar"), "data.dataset: 'cifar' is not allowed"),
    (lambda c: c.update(preset="big"), "preset: 'big' is not defined under presets; allowed: embedded, smoke"),
    (lambda c: c["presets"]["smoke"]["train"].update(stpes=1), "unknown key train.stpes"),
    (lambda c: c["sample"].update(num_samples=1001), "sample.num_samples: 1001 must be a multiple"),
    (lambda c: c["data"].update(image_size=18), "data.image_size: 18 must be divisible"),
    (lambda c: c["model"].update(attn=[5]), "model.attn: level 5 does not exist"),
    (lambda c: c["model"].update(ch=48), "model.ch: 48 is not a multiple of 32"),
    (lambda c: c["objectives"]["cbdm"].update(prior="balanced"), "objectives.cbdm.prior: 'balanced' is not allowed"),
    (lambda c: c["train"].update(label_drop="row"), "train.label_drop: 'row' is not allowed; allowed: batch, sample"),
    (lambda c: c["evaluate"].update(feature_extractor="inception-v3-compat"),
     "evaluate.inception_weights_path: None is not a file"),
])
def test_bad_config_one_line_naming_key(edit, expected):
    with pytest.raises(ConfigError) as info:
        resolve_with(edit)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_smoke_typo_reported_with_preset_name():
    with pytest.raises(ConfigError, match="in preset 'smoke'"):
        resolve_with(lambda c: c["presets"]["smoke"]["train"].update(stpes=1))


def test_presets_merge_over_base():
    cfg = load("config.yaml", preset="smoke")
    assert cfg["train"]["steps"] == 20 and cfg["train"]["lr"] == BASE["train"]["lr"]
    assert load("config.yaml")["train"]["steps"] == BASE["train"]["steps"]


def test_run_config_holds_only_what_training_needs():
    cfg = load("config.yaml")
    run = run_config(cfg, "animals", 0.01, "coral_ambient", 0)
    assert set(run) == {"run", "data", "model", "diffusion", "train", "objective"}
    assert run["objective"]["hparams"] == {**cfg["objectives"]["coral"], "pool_size": 8}
    assert run["data"]["rho"] == 0.01


def test_config_never_executes_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("preset: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)
