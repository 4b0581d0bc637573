"""The experiment grid of a resolved config: its settings (training sets), the run variants of its
methods and ablations, and the config of each setting and run; plain dict lookups and merges."""
from __future__ import annotations

import copy
from typing import Any

def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# Ablation keys: sample.omega re-samples the trained checkpoints; keys under these sections retrain.
TRAINING_SECTIONS = ("train", "objectives", "model", "diffusion")
SAMPLING_KEY = "sample.omega"
# The training set of a run (the imbalance-vs-scarcity diagnosis): a study of it retrains on another split.
TRAINING_SET_KEY = "data.training_set"


def value_at(cfg: dict, dotted: str):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def with_value_at(cfg: dict, dotted: str, value) -> dict:
    cfg = copy.deepcopy(cfg)
    parent, _, leaf = dotted.rpartition(".")
    (value_at(cfg, parent) if parent else cfg)[leaf] = value
    return cfg


def setting_name(dataset: str, rho: float | None) -> str:
    """A training set's name: `<dataset>-rho<rho>`, or the dataset alone when it is long-tailed as published."""
    return dataset if rho is None else f"{dataset}-rho{float(rho)}"


def settings(cfg: dict) -> dict[str, dict]:
    """Setting name -> {"dataset", "rho"}, in config order."""
    return {setting_name(s["dataset"], s.get("rho")): {"dataset": s["dataset"], "rho": s.get("rho")}
            for s in cfg["data"]["settings"]}


def setting_config(cfg: dict, name: str) -> dict:
    """The config of one setting: its dataset's overrides merged in; data.dataset and data.rho set."""
    setting = settings(cfg)[name]
    merged = deep_merge(cfg, cfg["dataset_overrides"].get(setting["dataset"], {}))
    data = {k: v for k, v in merged["data"].items() if k != "settings"}
    merged["data"] = {**data, "dataset": setting["dataset"], "rho": setting["rho"]}
    return merged


def dataset_section(cfg: dict, dataset: str, section: str) -> dict:
    """One config section of a dataset (for its reference set, features and classifier), from its first setting."""
    first = next(name for name, s in settings(cfg).items() if s["dataset"] == dataset)
    return setting_config(cfg, first)[section]


def dataset_config(cfg: dict, dataset: str) -> dict:
    """The data config of a dataset, without the rho of its first setting."""
    return {k: v for k, v in dataset_section(cfg, dataset, "data").items() if k != "rho"}


def ablation_setting(cfg: dict) -> str:
    return cfg["ablations"]["setting"] or next(iter(settings(cfg)))


def variant_name(method: str, key: str, value) -> str:
    return f"{method}~{key.rsplit('.', 1)[-1]}={value}"


def omega_of(sample: dict, method: str) -> float:
    """The guidance scale a method samples with: sample.omega, or its entry when omega is per method."""
    omega = sample["omega"]
    return float(omega[method] if isinstance(omega, dict) else omega)


def study_rows(cfg: dict, study: str) -> list[dict]:
    """The (method, value) points of an ablation study, each with the run variant and the guidance
    omega that produce it. A point equal to the base config reuses the main run."""
    spec = cfg["ablations"]["studies"][study]
    base = setting_config(cfg, ablation_setting(cfg))
    key = spec.get("key")
    rows = []
    for method in spec["methods"]:
        for value in spec.get("values", [None]):  # a study without key has no values (validated)
            if key is None:
                rows.append({"method": method, "value": method, "variant": method,
                             "omega": omega_of(base["sample"], method)})
            elif key == SAMPLING_KEY:
                rows.append({"method": method, "value": value, "variant": method, "omega": value})
            else:
                variant = method if value_at(base, key) == value else variant_name(method, key, value)
                rows.append({"method": method, "value": value, "variant": variant,
                             "omega": omega_of(base["sample"], method)})
    return rows


def variants(cfg: dict) -> dict[str, tuple[str, dict]]:
    """Run variant name -> (objective, {dotted key: value}) for every method and ablation run."""
    found = {method: (method, {}) for method in cfg["methods"]}
    for study, spec in cfg["ablations"]["studies"].items():
        for row in study_rows(cfg, study):
            found.setdefault(row["variant"], (row["method"], {} if row["variant"] == row["method"]
                                                 else {spec["key"]: row["value"]}))
    return found


# The released CORAL code's contrastive weight: w = 0.5 x tau_sc (objectives.coral.weight: coupled).
CORAL_WEIGHT_PER_TAU_SC = 0.5


def objective_hparams(cfg: dict, method: str) -> dict[str, Any]:
    """The keyword arguments of a method's objective class (CORAL's coupled weight resolved to a number)."""
    objectives = cfg["objectives"]
    if method not in ("coral", "coral_ambient"):
        return dict(objectives.get(method, {}))
    hparams = {**objectives["coral"], **(objectives["coral_ambient"] if method == "coral_ambient" else {})}
    if hparams["weight"] == "coupled":
        hparams["weight"] = CORAL_WEIGHT_PER_TAU_SC * hparams["tau_sc"]
    return hparams


def run_config(cfg: dict, setting: str, variant: str, seed: int) -> dict:
    """Everything a training run depends on, and nothing else (so unrelated edits don't retrain)."""
    method, overrides = variants(cfg)[variant]
    run_cfg = setting_config(cfg, setting)
    for key, value in overrides.items():
        run_cfg = with_value_at(run_cfg, key, value)
    data = {k: v for k, v in run_cfg["data"].items() if k not in ("data_root", "download")}  # where, not what
    return {
        "run": {"setting": setting, "dataset": data["dataset"], "rho": data["rho"], "method": method,
                "variant": variant, "seed": seed},
        "data": data,
        "model": run_cfg["model"],
        "diffusion": run_cfg["diffusion"],
        "train": run_cfg["train"],
        "objective": {"name": method, "hparams": objective_hparams(run_cfg, method)},
    }
