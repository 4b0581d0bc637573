"""Typed config sections: the same keys as the schema, and one line for a missing or unknown key."""
import pytest

from coral import config, sections
from coral import grid
from coral.config import ConfigError


@pytest.mark.parametrize("name", sorted(sections.SECTIONS))
def test_each_section_has_exactly_the_schema_keys_in_order(name):
    assert sections.SECTIONS[name].keys() == tuple(config.schema()["properties"][name]["properties"])


@pytest.mark.parametrize("name", sorted(sections.SECTIONS))
def test_every_preset_builds_every_section_and_round_trips(name):
    raw = config.load_yaml("config.yaml")
    for preset in raw["presets"]:
        cfg = grid.deep_merge(raw, raw["presets"][preset])
        for setting in grid.settings(cfg):
            section = sections.of_setting(cfg, setting, name)
            assert section.as_dict() == grid.setting_config(cfg, setting)[name]
            assert type(section).of(section.as_dict(), name) == section


def test_a_missing_or_unknown_key_is_one_line_naming_it():
    values = config.load("config.yaml")["latent"]
    with pytest.raises(ConfigError, match=r"^latent: missing keys \['knn_k'\]; the keys are t_fraction, per_class"):
        sections.LatentConfig.of({k: v for k, v in values.items() if k != "knn_k"}, "latent")
    with pytest.raises(ConfigError, match=r"^latent: unknown keys \['knn'\]; the keys are "):
        sections.LatentConfig.of({**values, "knn": 3}, "latent")


def test_a_dataset_override_reaches_the_section_of_its_settings():
    cfg = config.load("config.yaml")
    cfg["dataset_overrides"] = {"animals": {"evaluate": {"batch_size": 7}}}
    setting = next(iter(grid.settings(cfg)))
    assert sections.of_setting(cfg, setting, "evaluate").batch_size == 7
    assert sections.of_dataset(cfg, "animals", "evaluate").extractor == sections.ExtractorConfig("classifier", 7)


def test_the_latent_inputs_are_the_schemas_choices():
    assert list(sections.LATENT_INPUTS) == config.schema()["properties"]["latent"]["properties"]["tsne_input"]["enum"]
