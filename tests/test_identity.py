"""A stage's identity (coral.identity): what changes its numbers, in one canonical form; and the outputs
kept by identity (coral.reuse) that a rerun links back."""
import copy
import json
import os

import pytest

from coral import identity, lineage, reuse
from coral.config import load
from coral.grid import run_config, setting_config
from coral.sections import SampleConfig

SETTING = "animals-rho0.1"


@pytest.fixture(scope="module")
def cfg():
    return load("config.yaml", preset="smoke")


def changed(cfg, section, **values):
    cfg = copy.deepcopy(cfg)
    cfg[section].update(values)
    return cfg


def test_canonical_sorts_keys_and_writes_whole_numbers_as_integers():
    assert list(identity.canonical({"b": 1, "a": {"d": 2.0, "c": 0.5}})) == ["a", "b"]
    assert identity.canonical({"b": 1, "a": {"d": 2.0, "c": 0.5}}) == {"a": {"c": 0.5, "d": 2}, "b": 1}
    assert repr(identity.canonical({"lr": 1.0, "on": True, "steps": (1, 2.0)})) == "{'lr': 1, 'on': True, 'steps': [1, 2]}"


@pytest.mark.parametrize("section,values", [
    ("train", {"log_every": 7, "checkpoint_every": 3, "keep_checkpoints": 9, "prune_after_final": False,
               "tensorboard_every": 5, "compile": True, "channels_last": True, "cuda_graphs": True,
               "micro_batch_size": 8, "devices": 2}),
    ("train", {"lr": 5.0e-4}),  # the value it has, restated
    ("data", {"data_root": "/somewhere/else", "download": True}),
])
def test_a_run_keeps_its_identity_when_nothing_that_changes_its_weights_changes(cfg, section, values):
    before = identity.run(run_config(cfg, SETTING, "coral", 0))
    assert identity.run(run_config(changed(cfg, section, **values), SETTING, "coral", 0)) == before


@pytest.mark.parametrize("section,values,key", [
    ("train", {"lr": 1e-3}, "lr"), ("train", {"bf16_autocast": False}, "bf16_autocast"),
    ("data", {"hflip": True}, "hflip"), ("data", {"subsample_seed": 1}, "subsample_seed"),
])
def test_a_run_changes_its_identity_with_what_changes_its_weights(cfg, section, values, key):
    before = identity.run(run_config(cfg, SETTING, "coral", 0))
    after = identity.run(run_config(changed(cfg, section, **values), SETTING, "coral", 0))
    assert after != before and after[section][key] == values[key]


def test_sample_identity_leaves_out_the_batch_size_compiling_and_what_its_sampler_never_reads(cfg):
    sample = setting_config(cfg, SETTING)["sample"]
    ddim = identity.sample(sample, "coral")
    assert identity.sample({**sample, "batch_size": 7, "compile": not sample["compile"]}, "coral") == ddim
    assert {"steps": 5, "eta": 0} == {key: ddim[key] for key in ("steps", "eta")}
    ddpm = identity.sample({**sample, "sampler": "ddpm"}, "coral")
    assert "steps" not in ddpm and "eta" not in ddpm
    assert identity.sample({**sample, "sampler": "ddpm", "steps": 999, "eta": 1.0}, "coral") == ddpm
    per_method = identity.sample({**sample, "omega": {"coral": 1.0, "ddpm": 2.5}}, "coral")
    assert per_method == ddim  # the method's own value, 1.0 == 1


def test_evaluate_latent_and_features_leave_out_batch_sizes_and_where_the_weights_are(cfg):
    section = setting_config(cfg, SETTING)
    evaluate, latent = section["evaluate"], section["latent"]
    assert identity.evaluate({**evaluate, "batch_size": 3, "inception_weights_path": "/x"}) == identity.evaluate(evaluate)
    assert identity.latent({**latent, "batch_size": 3}) == identity.latent(latent)
    assert identity.features({"feature_extractor": "classifier", "batch_size": 1}) == {"feature_extractor": "classifier"}


def test_split_and_reference_leave_out_keys_their_dataset_never_reads(cfg):
    data = setting_config(cfg, SETTING)["data"]
    assert identity.split(data) == {"dataset": "animals", "image_size": 8, "rho": 0.1, "subsample_seed": 0,
                                    "training_set": "long_tailed"}
    celeba = {"dataset": "celeba5", "rho": None, "image_size": 64, "subsample_seed": 3, "training_set": "long_tailed"}
    assert identity.split(celeba) == {"dataset": "celeba5", "image_size": 64, "training_set": "long_tailed"}
    assert identity.reference(celeba)["subsample_seed"] == 3  # its balanced reference is a seeded draw
    assert "subsample_seed" not in identity.reference(data)  # the whole balanced set


def test_a_stage_version_above_one_enters_its_identity(monkeypatch):
    assert identity.table("main_table") == {}
    monkeypatch.setitem(identity.VERSIONS, "main_table", 3)
    assert identity.table("main_table") == {"version": 3}


def test_records_written_before_identities_give_the_identity_their_config_gives(cfg):
    run = run_config(cfg, SETTING, "cbdm", 0)
    assert identity.recorded({"stage": "train", "config": run}) == identity.run(run)
    sample = SampleConfig.of({**setting_config(cfg, SETTING)["sample"], "omega": 1.0}, "sample").as_dict()
    assert identity.recorded({"stage": "sample", "config": {"run": run["run"], "sample": sample}}) == \
        identity.sample(sample, "cbdm")
    data = {k: v for k, v in setting_config(cfg, SETTING)["data"].items() if k != "training_set"}  # an older record
    assert identity.recorded({"stage": "subsample", "config": {"data": data, "rho": 0.1}}) == \
        identity.split({**data, "training_set": "long_tailed"})
    assert identity.recorded({"stage": "main_table", "config": {}}) == {}
    assert identity.recorded({"stage": "train", "config": {}, "identity": {"x": 1}}) == {"x": 1}


def test_settings_are_a_read_only_mapping_and_plain_gives_the_dicts_back():
    settings = identity.Settings({"a": {"b": [1, 2]}, "c": 3})
    assert settings["c"] == 3 and dict(settings) == {"a": {"b": [1, 2]}, "c": 3}
    with pytest.raises(TypeError):
        settings["c"] = 4
    assert type(identity.plain(settings)) is dict and json.dumps(identity.plain(settings))


# ---------------------------------------------------------------- outputs kept by identity (coral.reuse)

ID = {"steps": 20}


@pytest.fixture
def made(tmp_path, monkeypatch):
    """An input file and an output made from it, recorded and kept as a stage does."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "split.npz"
    source.write_bytes(b"images")
    output = tmp_path / "run" / "final.pt"
    output.parent.mkdir()
    output.write_bytes(b"weights")
    lineage.record([output], "train", [source], {}, ID)
    reuse.keep([output], ID)
    return source, output


def test_a_kept_output_is_a_second_name_of_the_file_and_comes_back_after_a_deletion(made):
    source, output = made
    kept = reuse.kept_path(output, ID)
    assert os.path.samefile(kept, output) and kept.parent.name == identity.digest(ID)
    output.unlink()
    lineage.lineage_path(output).unlink()
    assert reuse.restore([output], ID, [source])
    assert output.read_bytes() == b"weights" and lineage.read_record(output)["identity"] == ID


@pytest.mark.parametrize("change", ["identity", "input", "damage"])
def test_a_kept_output_is_not_reused_for_another_identity_other_inputs_or_when_damaged(made, change):
    source, output = made
    output.unlink()
    wanted = ID
    if change == "identity":
        wanted = {"steps": 21}
    elif change == "input":
        source.write_bytes(b"other images")
    else:
        kept = reuse.kept_path(output, ID)
        os.unlink(kept)
        kept.write_bytes(b"weightz")
    assert not reuse.restore([output], wanted, [source])
    assert not output.exists()
