"""Config validation: every typo stops with one line naming the key and what is allowed."""
import copy

import pytest
import yaml

from coral.config import ConfigError, from_command_line, load, resolve, schema
from coral.grid import deep_merge, run_config, setting_config, settings, study_rows, variants

BASE = yaml.safe_load(open("config.yaml"))


def resolve_with(edit):
    raw = copy.deepcopy(BASE)
    edit(raw)
    return resolve(raw)


def test_smoke_typo_reported_with_preset_name():
    with pytest.raises(ConfigError, match="in preset 'smoke'"):
        resolve_with(lambda c: c["presets"]["smoke"]["train"].update(stpes=1))


def test_presets_merge_over_base():
    cfg = load("config.yaml", preset="smoke")
    assert cfg["train"]["steps"] == 20 and cfg["train"]["lr"] == BASE["train"]["lr"]
    assert load("config.yaml")["train"]["steps"] == BASE["train"]["steps"]


def test_run_config_holds_only_what_training_needs():
    cfg = load("config.yaml")
    run = run_config(cfg, "animals-rho0.01", "coral_ambient", 0)
    assert set(run) == {"run", "data", "model", "diffusion", "train", "objective"}
    # the coupled weight of the released code: w = 0.5 x tau_sc = 0.05, exactly the fixed value it replaced
    assert run["objective"]["hparams"] == {**cfg["objectives"]["coral"], "weight": 0.05, "pool_size": 8}
    assert run["data"]["rho"] == 0.01 and run["data"]["dataset"] == "animals"
    assert "data_root" not in run["data"]  # where the data lives does not retrain


def test_ablation_runs_change_one_key_and_reuse_the_base_value():
    cfg = load("config.yaml")
    rows = study_rows(cfg, "tau_sc")
    assert [r["value"] for r in rows] == [0.05, 0.1, 0.2, 0.5, 1.0]
    assert [r["variant"] for r in rows][:2] == ["coral~tau_sc=0.05", "coral"]  # 0.1 is the base config's value
    base, varied = run_config(cfg, "animals-rho0.01", "coral", 0), run_config(cfg, "animals-rho0.01", "coral~tau_sc=0.5", 0)
    # the weight moves with tau_sc (w = 0.5 tau_sc, the released code) unless it is set to a number
    assert varied["objective"] == {"name": "coral", "hparams": {**base["objective"]["hparams"], "tau_sc": 0.5,
                                                                 "weight": 0.25}}
    cfg_fixed = deep_merge(cfg, {"objectives": {"coral": {"weight": 0.05}}})
    fixed = run_config(cfg_fixed, "animals-rho0.01", "coral~tau_sc=0.5", 0)
    assert fixed["objective"]["hparams"]["weight"] == 0.05 and fixed["objective"]["hparams"]["tau_sc"] == 0.5
    assert {k: v for k, v in varied.items() if k not in ("objective", "run")} == \
        {k: v for k, v in base.items() if k not in ("objective", "run")}
    dropped = run_config(cfg, "animals-rho0.01", "coral~label_drop=sample", 0)
    assert dropped["train"] == {**base["train"], "label_drop": "sample"}
    omega = study_rows(cfg, "omega")  # guidance re-samples the main checkpoints
    assert {r["variant"] for r in omega} == {"ddpm", "cbdm", "t2h", "coral"}
    assert [r["omega"] for r in omega][:3] == [0.0, 0.5, 1.0]
    assert len(variants(cfg)) == 4 + 1 + 4 + 4 + 1 + 1 + 4  # methods, ambient, tau_sc, tau_r, label_drop, reduction,
    # and the balanced training sets of DDPM and CORAL


def test_paper_preset_matrix_and_dataset_overrides(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["preset"] = "paper"
    with pytest.raises(ConfigError, match="data.data_root: dataset 'cifar10' is not under"):
        resolve(raw)  # the chosen preset's datasets must be on disk
    cfg = deep_merge(raw, raw["presets"]["paper"])
    assert list(settings(cfg)) == ["cifar10-rho0.01", "cifar10-rho0.001", "cifar100-rho0.01", "celeba5", "imagenet_lt"]
    celeba = setting_config(cfg, "celeba5")
    assert celeba["data"]["image_size"] == 64 and celeba["model"]["ch_mult"] == [1, 2, 2, 2, 2]
    assert celeba["data"]["rho"] is None and celeba["model"]["num_res_blocks"] == 2
    cifar = setting_config(cfg, "cifar100-rho0.01")
    assert cifar["data"]["image_size"] == 32 and cifar["model"]["ch_mult"] == [1, 2, 2, 2]
    assert cfg["sample"]["sampler"] == "ddpm" and cfg["sample"]["num_samples"] == 50000
    assert cfg["evaluate"]["feature_extractor"] == "inception-v3-compat" and cfg["seeds"] == [0, 1, 2]


def test_config_never_executes_code(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("preset: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load(path)


def test_the_smallest_rho_with_a_tail_image_is_accepted():
    def smallest_rho(c):
        c["data"].update(settings=[{"dataset": "animals", "rho": 0.001}])
        c["train"]["batch_size"] = 10  # the diagnosis's balanced_scarce set: one image a class
    resolve_with(smallest_rho)


def test_a_batch_larger_than_a_training_set_is_refused_before_any_job():
    """rho 0.001 leaves the animals' tail class 1 image: the diagnosis's balanced_scarce set has 10 images,
    fewer than the embedded preset's batch of 64."""
    with pytest.raises(ConfigError, match=r"^train.batch_size: 64 exceeds the 10 training images of the run "
                                          r"ddpm~training_set=balanced_scarce of animals-rho0.001"):
        resolve_with(lambda c: c["data"].update(settings=[{"dataset": "animals", "rho": 0.001}]))


def test_command_line_strings_become_the_numbers_the_schema_wants():
    """Snakemake's --config 'seeds=[0,1,2]' gives ['0', '1', '2']; nested values are strings too."""
    raw = copy.deepcopy(BASE)
    raw.update(seeds=["0", "1", "2"], preset="smoke")
    raw["train"]["bf16_autocast"] = "true"
    raw["data"]["settings"] = [{"dataset": "animals", "rho": "0.05"}]
    raw["presets"]["smoke"]["sample"]["omega"] = "1.5"
    assert from_command_line(raw)["data"]["settings"][0]["rho"] == 0.05
    cfg = resolve(from_command_line(raw))
    assert cfg["seeds"] == [0, 1, 2] and cfg["train"]["bf16_autocast"] is True and cfg["sample"]["omega"] == 1.5
    raw["seeds"] = ["0", "one"]  # not a number: the schema's error, as before
    with pytest.raises(ConfigError, match=r"seeds\[1\]: 'one' is not of type 'integer'"):
        resolve(from_command_line(raw))
    raw["seeds"] = ["0"]
    raw["train"]["label_drop"] = "1"  # a string key stays a string: the enum refuses it
    with pytest.raises(ConfigError, match="train.label_drop: '1' is not allowed"):
        resolve(from_command_line(raw))


def test_the_schema_holds_no_defaults_config_yaml_holds_them():
    """config.yaml is the one home of every default value: a `default` in the schema would be a second one."""
    def defaults(node, path=""):
        if isinstance(node, dict):
            found = [path] if "default" in node else []
            return found + [p for key, value in node.items() for p in defaults(value, f"{path}/{key}")]
        if isinstance(node, list):
            return [p for i, value in enumerate(node) for p in defaults(value, f"{path}/{i}")]
        return []
    assert defaults(schema()) == []


def test_the_diagnosis_trains_on_balanced_sets_of_a_balanced_source():
    from coral.config import validate
    cfg = load("config.yaml")
    rows = study_rows(cfg, "imbalance_vs_scarcity")
    assert [r["variant"] for r in rows][:3] == ["ddpm", "ddpm~training_set=balanced_total",
                                                "ddpm~training_set=balanced_scarce"]
    scarce = run_config(cfg, "animals-rho0.01", "ddpm~training_set=balanced_scarce", 0)
    assert scarce["data"]["training_set"] == "balanced_scarce" and scarce["objective"]["name"] == "ddpm"
    # a naturally long-tailed ablation setting is a valid config; its balanced sets stop at their split job
    # (data.write_split refuses them, naming data.training_set)
    validate(deep_merge(BASE, {"data": {"settings": [{"dataset": "celeba5"}]}}), check_files=False)


def test_a_per_method_omega_gives_each_method_its_own_guidance():
    from coral.config import preset_config
    from coral.grid import omega_of
    paper = preset_config(BASE, "paper")
    assert [omega_of(paper["sample"], m) for m in ("ddpm", "cbdm", "t2h", "coral")] == [0.8, 1.6, 1.5, 0.8]
    assert omega_of({"omega": 1}, "t2h") == 1.0
    rows = study_rows(paper, "latent_vs_ambient")  # a study's other points sample with their method's omega
    assert [(r["variant"], r["omega"]) for r in rows] == [("coral", 0.8), ("coral_ambient", 0.8)]


def test_tensorboard_without_its_package_is_refused_before_any_job(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.tensorboard_every: 100 needs the tensorboard package"):
        resolve_with(lambda c: c["train"].update(tensorboard_every=100))
    assert resolve_with(lambda c: None)["train"]["tensorboard_every"] == 0  # off: nothing to install


def test_a_preset_switches_a_study_off_with_null():
    cfg = load("config.yaml", preset="claims")
    assert "label_drop" not in cfg["ablations"]["studies"] and "coral_reduction" not in cfg["ablations"]["studies"]
    assert cfg["ablations"]["studies"]["tau_r"] == {"methods": ["coral"], "key": "objectives.coral.tau_r",
                                                    "values": [0.3, 1.0]}
    assert set(load("config.yaml")["ablations"]["studies"]) >= {"label_drop", "coral_reduction"}


def test_preset_warnings_name_each_key_of_yours_the_preset_overrides():
    from coral.config import preset_warnings
    overlay = {"train": {"steps": 30, "batch_size": 16, "lr": 1.0e-3},  # 16 restates smoke's own value; smoke sets no lr
               "data": {"settings": [{"dataset": "animals", "rho": 0.1}, {"dataset": "cifar10", "rho": 0.01}]}}
    assert preset_warnings(BASE, deep_merge(BASE, overlay), "smoke") == [
        "warning: data.settings: your setting cifar10-rho0.01 is not trained: presets.smoke.data.settings replaces "
        "the list (animals-rho0.1); to train it, set data.settings under presets.smoke or choose another preset",
        "warning: train.steps: your 30 loses to presets.smoke.train.steps = 20; to keep yours, set train.steps under "
        "presets.smoke or choose another preset"]
    assert preset_warnings(BASE, deep_merge(BASE, overlay), "embedded") == []
    # the preset's dataset_overrides win too, and a key of the user's own dataset_overrides can lose to them
    overlay = {"train": {"bf16_autocast": False}, "dataset_overrides": {"celeba5": {"data": {"image_size": 32}}},
               "presets": {"paper": {"seeds": [0]}}}  # a key under presets is the preset's: not reported
    assert preset_warnings(BASE, deep_merge(BASE, overlay), "paper") == [
        "warning: dataset_overrides.celeba5.data.image_size: your 32 loses to "
        "presets.paper.dataset_overrides.celeba5.data.image_size = 64; to keep yours, set "
        "dataset_overrides.celeba5.data.image_size under presets.paper or choose another preset",
        "warning: train.bf16_autocast: your false loses to presets.paper.dataset_overrides.celeba5.train.bf16_autocast "
        "= true; to keep yours, set train.bf16_autocast under presets.paper.dataset_overrides.celeba5 or choose "
        "another preset",
        "warning: train.bf16_autocast: your false loses to "
        "presets.paper.dataset_overrides.imagenet_lt.train.bf16_autocast = true; to keep yours, set "
        "train.bf16_autocast under presets.paper.dataset_overrides.imagenet_lt or choose another preset"]
    # a study the preset switches off (null) overrides every key of it
    overlay = {"ablations": {"studies": {"label_drop": {"values": ["sample"]}}}}
    assert preset_warnings(BASE, deep_merge(BASE, overlay), "claims") == [
        "warning: ablations.studies.label_drop.values: your [\"sample\"] loses to "
        "presets.claims.ablations.studies.label_drop = null; to keep yours, set ablations.studies.label_drop.values "
        "under presets.claims or choose another preset"]


def test_an_error_names_the_preset_it_comes_from_or_none():
    """Every preset is validated; an error names a preset only when that preset's keys bring it about."""
    def overlaid(overlay, preset):
        return {**deep_merge(BASE, overlay), "preset": preset}
    # the user's own keys, shadowed by the chosen smoke preset (which sets train.steps and sample.num_samples)
    for overlay, expected in [({"train": {"steps": 0}}, "train.steps: 0 is less than the minimum of 1"),
                              ({"sample": {"num_samples": 55}}, "sample.num_samples: 55 must be a multiple of the 10")]:
        with pytest.raises(ConfigError) as info:
            resolve(overlaid(overlay, "smoke"))
        assert str(info.value).startswith(expected) and "in preset" not in str(info.value), info.value
    # a key under a preset not chosen, and one under the chosen preset
    with pytest.raises(ConfigError, match=r"^train.steps: 0 is less than the minimum of 1 \(in preset 'claims'\)$"):
        resolve(overlaid({"presets": {"claims": {"train": {"steps": 0}}}}, "smoke"))
    with pytest.raises(ConfigError, match=r"^train.steps: 0 is less than the minimum of 1 \(in preset 'smoke'\)$"):
        resolve(overlaid({"presets": {"smoke": {"train": {"steps": 0}}}}, "smoke"))


def test_devices_must_split_the_batch_and_a_micro_batch_divide_each_share():
    with pytest.raises(ConfigError, match=r"^train.batch_size: 64 does not split evenly over train.devices = 3; "
                                          r"allowed: a multiple of 3$"):
        resolve_with(lambda c: c["train"].update(devices=3))
    with pytest.raises(ConfigError, match=r"^train.micro_batch_size: 24 does not divide the per-device batch 32 "):
        resolve_with(lambda c: c["train"].update(devices=2, micro_batch_size=24))
    # a study that varies the micro-batch: the run it makes is named
    study = {"micro": {"methods": ["coral"], "key": "train.micro_batch_size", "values": [0, 5]}}
    with pytest.raises(ConfigError, match=r"^train.micro_batch_size: 5 does not divide the per-device batch 64 "
                                          r"\(train.batch_size / train.devices\) \(run coral~micro_batch_size=5 of "):
        resolve_with(lambda c: c["ablations"]["studies"].update(study))
    cfg = resolve_with(lambda c: c["train"].update(devices=2, micro_batch_size=8))  # 64 / 2 GPUs = 4 passes of 8
    assert (cfg["train"]["devices"], cfg["train"]["micro_batch_size"]) == (2, 8)


def test_how_a_run_is_spread_and_where_inception_comes_from_leave_identities_alone():
    from coral import identity
    from coral.config import preset_config
    cfg = preset_config(BASE, "paper")  # its datasets need not be here
    run = run_config(cfg, "cifar10-rho0.01", "coral", 0)
    spread = {**run, "train": {**run["train"], "devices": 8, "micro_batch_size": 8}}
    assert identity.run(spread) == identity.run(run)
    evaluate = setting_config(cfg, "cifar10-rho0.01")["evaluate"]
    assert identity.evaluate({**evaluate, "inception_download": True}) == identity.evaluate(evaluate)


def test_missing_inception_weights_say_which_file_goes_where_unless_the_workflow_fetches_them(tmp_path):
    weights = tmp_path / "weights-inception-2015-12-05-6726825d.pth"

    def inception(download):
        def edit(c):
            c["evaluate"].update(feature_extractor="inception-v3-compat", inception_weights_path=str(weights),
                                 inception_download=download)
        return edit

    with pytest.raises(ConfigError) as info:
        resolve_with(inception(False))
    assert str(info.value) == (
        f"evaluate.inception_weights_path: '{weights}' is not a file; inception-v3-compat needs torch-fidelity's "
        "Inception weights there: download https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
        f"weights-inception-2015-12-05-6726825d.pth to {weights}, or set evaluate.inception_download: true to fetch "
        "it on first use")
    assert resolve_with(inception(True))["evaluate"]["inception_download"]  # the workflow's job fetches it
    assert not weights.exists()  # nothing was downloaded at config time


def test_the_inception_url_is_the_one_torch_fidelity_downloads():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
    from coral.sources import INCEPTION_URL
    assert INCEPTION_URL == URL_INCEPTION_V3
