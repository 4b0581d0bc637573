"""Configuration: base keys + one preset, validated against a JSON schema before any work.

Errors are ConfigError with one line naming the key, the bad value and what is allowed.
Reading a config never executes code (yaml.safe_load).
"""
from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from coral.sources import NUM_CLASSES, missing_dataset_message



class ConfigError(ValueError):
    """A config value is invalid; the message is one line naming the key."""


def schema() -> dict:
    text = (importlib.resources.files("coral") / "schemas" / "config.schema.yaml").read_text()
    return yaml.safe_load(text)


def load_yaml(path: str | Path) -> dict:
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(raw).__name__}")
    return raw


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else ("." if parts else "") + str(p))
    return "".join(parts) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key_path(error)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        where = f"{key}." if key != "<top level>" else ""
        return f"unknown key {where}{extra[0]}; allowed keys{' in ' + key if where else ''}: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not allowed; allowed: {', '.join(map(str, error.validator_value))}"
    if error.validator == "required":
        return f"{key}: {error.message}"
    return f"{key}: {error.message}"


def validate(cfg: dict) -> None:
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        raise ConfigError(_describe(error))
    _check_consistency(cfg)


def _check_consistency(cfg: dict) -> None:
    """Checks that span several keys (the schema checks each key alone)."""
    data, model = cfg["data"], cfg["model"]
    num_levels = len(model["ch_mult"])
    if data["image_size"] % 2 ** (num_levels - 1):
        raise ConfigError(f"data.image_size: {data['image_size']} must be divisible by 2^(len(model.ch_mult) - 1) "
                          f"= {2 ** (num_levels - 1)}")
    bad_attn = [level for level in model["attn"] if level >= num_levels]
    if bad_attn:
        raise ConfigError(f"model.attn: level {bad_attn[0]} does not exist; allowed: 0..{num_levels - 1}")
    if cfg["diffusion"]["beta_1"] >= cfg["diffusion"]["beta_T"]:
        raise ConfigError(f"diffusion.beta_1: {cfg['diffusion']['beta_1']} must be below "
                          f"diffusion.beta_T = {cfg['diffusion']['beta_T']}")
    missing = missing_dataset_message(data)
    if missing:
        raise ConfigError(missing)
    num_classes = NUM_CLASSES[data["dataset"]]
    sample = cfg["sample"]
    if sample["labels"] == "stratified" and sample["num_samples"] % num_classes:
        raise ConfigError(f"sample.num_samples: {sample['num_samples']} must be a multiple of the "
                          f"{num_classes} classes of {data['dataset']} when sample.labels is stratified")
    if sample["sampler"] == "ddim" and sample["steps"] > cfg["diffusion"]["T"]:
        raise ConfigError(f"sample.steps: {sample['steps']} exceeds diffusion.T = {cfg['diffusion']['T']}")
    evaluate = cfg["evaluate"]
    if evaluate["feature_extractor"] == "inception-v3-compat" and not (
            evaluate["inception_weights_path"] and Path(evaluate["inception_weights_path"]).is_file()):
        raise ConfigError(f"evaluate.inception_weights_path: {evaluate['inception_weights_path']!r} is not a file; "
                          "inception-v3-compat needs torch-fidelity's Inception weights on disk (nothing is downloaded)")
    pool = cfg["objectives"]["coral_ambient"]["pool_size"]
    if pool > data["image_size"]:
        raise ConfigError(f"objectives.coral_ambient.pool_size: {pool} exceeds data.image_size = {data['image_size']}")


def resolve(raw: dict) -> dict:
    """Merge the chosen preset over the base keys and validate; every preset is checked too."""
    raw = copy.deepcopy(raw)
    presets = raw.get("presets", {})
    preset = raw.get("preset", "embedded")
    if not isinstance(presets, dict) or preset not in presets:
        allowed = ", ".join(presets) if isinstance(presets, dict) else "(presets is not a mapping)"
        raise ConfigError(f"preset: {preset!r} is not defined under presets; allowed: {allowed}")
    for name, override in presets.items():
        if not isinstance(override, dict):
            raise ConfigError(f"presets.{name}: must be a mapping of keys, found {override!r}")
    cfg = deep_merge(raw, presets[preset])
    validate(cfg)
    for name, override in presets.items():  # catch typos in presets not chosen now, too
        try:
            validate(deep_merge(raw, override))
        except ConfigError as err:
            raise ConfigError(f"{err} (in preset {name!r})") from None
    return cfg


def load(path: str | Path, preset: str | None = None) -> dict:
    """Read a config file and resolve it (optionally choosing another preset)."""
    raw = load_yaml(path)
    if preset is not None:
        raw["preset"] = preset
    return resolve(raw)


def objective_hparams(cfg: dict, method: str) -> dict[str, Any]:
    """The keyword arguments of a method's objective class."""
    objectives = cfg["objectives"]
    if method == "coral_ambient":
        return {**objectives["coral"], **objectives["coral_ambient"]}
    return dict(objectives.get(method, {}))


def run_config(cfg: dict, dataset: str, rho: float, method: str, seed: int) -> dict:
    """Everything a training run depends on, and nothing else (so unrelated edits don't retrain)."""
    return {
        "run": {"dataset": dataset, "rho": rho, "method": method, "seed": seed},
        "data": {**cfg["data"], "dataset": dataset, "rho": rho},
        "model": cfg["model"],
        "diffusion": cfg["diffusion"],
        "train": cfg["train"],
        "objective": {"name": method, "hparams": objective_hparams(cfg, method)},
    }
