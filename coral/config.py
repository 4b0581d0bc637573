"""Configuration: base keys + one preset, validated against a JSON schema before any work.

Errors are ConfigError with one line naming the key, the bad value and what is allowed.
Reading a config never executes code (yaml.safe_load).
"""
from __future__ import annotations

import copy
import importlib.util
import math
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from coral import methods
from coral.grid import (SAMPLING_KEY, TRAINING_SECTIONS, TRAINING_SET_KEY, ablation_setting, deep_merge, run_config,
                        setting_config, setting_name, settings, value_at, variant_name, variants, with_value_at)
from coral.longtail import long_tail_counts, training_set_counts
from coral.sources import (BALANCED_PER_CLASS, NATURALLY_LONG_TAILED, NUM_CLASSES, missing_dataset_message,
                           missing_inception_message)

# Names that become parts of file paths (study names, run variants): no separators, no "..".
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=~+-]*")

class ConfigError(ValueError):
    """A config value is invalid; the message is one line naming the key."""


def schema() -> dict:
    text = (importlib.resources.files("coral") / "schemas" / "config.schema.yaml").read_text()
    root = yaml.safe_load(text)
    root["$defs"]["method"]["enum"] = list(methods.NAMES)
    root["$defs"]["dataset"]["enum"] = list(NUM_CLASSES)
    return root


def load_yaml(path: str | Path) -> dict:
    """A config file's mapping. Every problem is one ConfigError naming the file, and for bad text or YAML
    the line and column (read as UTF-8, as Snakemake reads config files)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path}: byte 0x{data[err.start]:02x} at {_line_column(data[:err.start])} is "
                          "not UTF-8 text; save the file as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML{_yaml_problem(err, text)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, found {type(raw).__name__}")
    return raw


def _line_column(before: str | bytes) -> str:
    """'line L, column C' of the character that follows `before` (the text up to it)."""
    lines = before.split(b"\n" if isinstance(before, bytes) else "\n")
    return f"line {len(lines)}, column {len(lines[-1]) + 1}"


def _yaml_problem(err: yaml.YAMLError, text: str) -> str:
    """' at line L, column C: what is wrong' (and where the construct it was reading began)."""
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow
        return f" at {_line_column(text[:err.position])}: {str(err).splitlines()[0]}"
    if not isinstance(err, yaml.MarkedYAMLError) or err.problem_mark is None:
        return f": {' '.join(str(err).split())}"
    context = ""
    if err.context and err.context_mark is not None:
        context = f" ({err.context} at {_line_column(text[:err.context_mark.index])})"
    return f" at {_line_column(text[:err.problem_mark.index])}: {err.problem}{context}"


def from_command_line(cfg: dict) -> dict:
    """`cfg` with the strings Snakemake's --config makes of every nested value (seeds=[0,1,2] gives
    ['0', '1', '2']) turned back into the numbers, booleans and nulls the schema asks for there.
    Presets and dataset overrides are partial configs: the whole schema applies to them."""
    root = schema()

    def resolved(node: dict) -> dict:
        while "$ref" in node:
            node = {**root["$defs"][node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def typed(value, node: dict):
        node = resolved(node)
        if isinstance(value, str):
            wanted = node.get("type", [])
            wanted = [wanted] if isinstance(wanted, str) else wanted
            if not {"integer", "number", "boolean", "null"} & set(wanted):
                return value
            parsed = yaml.safe_load(value)
            kinds = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
            return parsed if any(isinstance(parsed, kinds[t]) and not (t != "boolean" and isinstance(parsed, bool))
                                 for t in wanted if t in kinds) else value
        if isinstance(value, dict):
            properties, extra = node.get("properties", {}), node.get("additionalProperties")
            return {key: typed(item, properties.get(key, extra if isinstance(extra, dict) else {}))
                    for key, item in value.items()}
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            return [typed(item, node["items"]) for item in value]
        return value

    partial = {**root, "required": []}
    cfg = typed(cfg, root)
    for section in ("presets", "dataset_overrides"):
        if isinstance(cfg.get(section), dict):
            cfg[section] = {name: typed(part, partial) for name, part in cfg[section].items()}
    return cfg


def with_preset(raw: dict, override: dict) -> dict:
    """`override` (a preset) merged over `raw`; an ablation study set to null is switched off (removed)."""
    cfg = deep_merge(raw, override)
    studies = cfg.get("ablations", {}).get("studies") if isinstance(cfg.get("ablations"), dict) else None
    if isinstance(studies, dict):
        cfg["ablations"]["studies"] = {name: study for name, study in studies.items() if study is not None}
    return cfg


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


def validate(cfg: dict, check_files: bool = True) -> None:
    """Schema, then every setting's merged config (and, with check_files, that its dataset is on disk)."""
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(cfg))
    if error is not None:
        raise ConfigError(_describe(error))
    names = [setting_name(s["dataset"], s.get("rho")) for s in cfg["data"]["settings"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.settings: {names} lists a setting twice")
    for i, setting in enumerate(cfg["data"]["settings"]):
        _check_setting(i, setting)
    for dataset, override in cfg["dataset_overrides"].items():
        merged = deep_merge(cfg, override)
        error = jsonschema.exceptions.best_match(validator.iter_errors(merged))
        if error is not None:
            raise ConfigError(f"{_describe(error)} (in dataset_overrides.{dataset})")
    for name in names:
        _check_consistency(setting_config(cfg, name), check_files)
    _check_ablations(cfg, validator)


def _check_setting(i: int, setting: dict) -> None:
    dataset, rho = setting["dataset"], setting.get("rho")
    if dataset in NATURALLY_LONG_TAILED and rho is not None:
        raise ConfigError(f"data.settings[{i}].rho: {rho} is not allowed for {dataset}, which is long-tailed "
                          "as published; leave rho out")
    if dataset not in NATURALLY_LONG_TAILED and rho is None:
        raise ConfigError(f"data.settings[{i}].rho: missing; {dataset} is balanced and needs an imbalance "
                          "factor 0 < rho <= 1")
    per_class = BALANCED_PER_CLASS.get(dataset)
    if rho is not None and per_class and int(per_class * rho) < 1:  # the tail class's count, docs/method.md §1
        raise ConfigError(f"data.settings[{i}].rho: {rho} leaves the tail class of {dataset} with "
                          f"int({per_class} x {rho}) = 0 images; allowed: {1 / per_class:g} <= rho <= 1")


def check_path_name(where: str, name: str) -> None:
    """`name` becomes part of a file path: one safe pattern, so nothing lands outside results/."""
    if not SAFE_NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{where}: {name!r} cannot be part of a file name; allowed: letters, digits and _ . = ~ + -, "
                          "starting with a letter or digit, without '..'")


def _check_consistency(cfg: dict, check_files: bool) -> None:
    """Checks of one setting's config that span several keys (the schema checks each key alone)."""
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
    _check_batch_split(cfg["train"], "")
    if check_files:
        missing = missing_dataset_message(data)
        if missing:
            raise ConfigError(missing)
    num_classes = NUM_CLASSES[data["dataset"]]
    sample = cfg["sample"]
    if sample["labels"] == "stratified" and sample["num_samples"] % num_classes:
        raise ConfigError(f"sample.num_samples: {sample['num_samples']} must be a multiple of the "
                          f"{num_classes} classes of {data['dataset']} when sample.labels is stratified")
    if isinstance(sample["omega"], dict):
        used = list(dict.fromkeys(cfg["methods"] + [m for study in cfg["ablations"]["studies"].values()
                                                     for m in study["methods"]]))
        missing = [m for m in used if m not in sample["omega"]]
        if missing:
            raise ConfigError(f"sample.omega: no value for {', '.join(missing)}; a per-method omega needs every "
                              f"method the config trains: {', '.join(used)}")
    if sample["sampler"] == "ddim" and sample["steps"] > cfg["diffusion"]["T"]:
        raise ConfigError(f"sample.steps: {sample['steps']} exceeds diffusion.T = {cfg['diffusion']['T']}")
    evaluate = cfg["evaluate"]
    if check_files and missing_inception_message(evaluate):
        raise ConfigError(missing_inception_message(evaluate))
    if check_files and cfg["train"]["tensorboard_every"] and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(f"train.tensorboard_every: {cfg['train']['tensorboard_every']} needs the tensorboard "
                          "package (pip install -e '.[tensorboard]'); 0 writes no TensorBoard output")
    pool = cfg["objectives"]["coral_ambient"]["pool_size"]
    if pool > data["image_size"]:
        raise ConfigError(f"objectives.coral_ambient.pool_size: {pool} exceeds data.image_size = {data['image_size']}")


def _check_sizes(cfg: dict) -> None:
    """What a job of the config that runs would refuse for the size of its data, checked before any job
    (and so before Snakemake deletes the outputs of one), wherever a dataset's size is known without
    reading it."""
    runs = [(name, method) for name in settings(cfg) for method in cfg["methods"]]
    runs += [(ablation_setting(cfg), variant) for variant in variants(cfg)]
    for name, variant in runs:
        run_cfg = run_config(cfg, name, variant, 0)
        _check_batch_split(run_cfg["train"], f" (run {variant} of {name})")
        images = _training_images(run_cfg["data"])
        if images is not None and run_cfg["train"]["batch_size"] > images:
            run = f"run {variant} of {name}, training set {run_cfg['data']['training_set']}"
            raise ConfigError(f"train.batch_size: {run_cfg['train']['batch_size']} exceeds the {images} training "
                              f"images of the {run}; allowed: at most {images}")
    for name in settings(cfg):
        setting = setting_config(cfg, name)
        dataset = setting["data"]["dataset"]
        num_classes, per_class = NUM_CLASSES[dataset], BALANCED_PER_CLASS.get(dataset)
        evaluate, sample, latent = setting["evaluate"], setting["sample"], setting["latent"]
        needed = max(2, evaluate["prc_neighborhood"] + 1)  # per-class FID needs 2 features, precision/recall k + 1
        if sample["labels"] == "stratified" and sample["num_samples"] // num_classes < needed:
            raise ConfigError(f"sample.num_samples: {sample['num_samples']} gives {sample['num_samples'] // num_classes} "
                              f"images per class of {dataset}; per-class metrics need at least {needed} "
                              f"(evaluate.prc_neighborhood + 1): allowed: {needed * num_classes} or more")
        if per_class is None:  # a naturally long-tailed dataset: its size is known only from its files
            continue
        classifier = setting["classifier"]
        held_out = math.ceil(classifier["test_fraction"] * per_class * num_classes)  # as scikit-learn rounds it
        if classifier["batch_size"] > per_class * num_classes - held_out:
            raise ConfigError(f"classifier.batch_size: {classifier['batch_size']} exceeds the "
                              f"{per_class * num_classes - held_out} images the classifier of {dataset} trains on")
        points = num_classes * min(latent["per_class"], per_class)
        if points < 4 or latent["knn_k"] > points - 1 or latent["perplexity"] >= points:
            raise ConfigError(f"latent.per_class: {latent['per_class']} gives {points} images of {dataset}; the t-SNE "
                              f"needs at least 4 and more than latent.perplexity = {latent['perplexity']}, and the "
                              f"k-NN purity more than latent.knn_k = {latent['knn_k']}")


def _check_batch_split(train: dict, where: str) -> None:
    """train.batch_size splits evenly over train.devices, and each device's share into micro-batches;
    `where` names the run (" (run coral of cifar10-rho0.01)") where a variant may have changed them."""
    batch, devices, micro = train["batch_size"], train["devices"], train["micro_batch_size"]
    if batch % devices:
        raise ConfigError(f"train.batch_size: {batch} does not split evenly over train.devices = {devices}{where}; "
                          f"allowed: a multiple of {devices}")
    if micro and (batch // devices) % micro:
        raise ConfigError(f"train.micro_batch_size: {micro} does not divide the per-device batch {batch // devices} "
                          f"(train.batch_size / train.devices){where}; allowed: a divisor of it, or 0")


def _training_images(data: dict) -> int | None:
    """The size of a run's training set, where it is known without reading the dataset."""
    per_class = BALANCED_PER_CLASS.get(data["dataset"])
    if per_class is None or data["rho"] is None:
        return None
    counts = long_tail_counts(per_class, data["rho"], NUM_CLASSES[data["dataset"]])
    return sum(training_set_counts(counts, data["training_set"]))


def _check_ablations(cfg: dict, validator) -> None:
    chosen = cfg["ablations"]["setting"]
    names = list(settings(cfg))
    if chosen is not None and chosen not in names:
        raise ConfigError(f"ablations.setting: {chosen!r} is not one of data.settings; allowed: "
                          f"{', '.join(names)}")
    for name, study in cfg["ablations"]["studies"].items():
        check_path_name("ablations.studies", name)
        where = f"ablations.studies.{name}"
        key = study.get("key")
        if key is None:
            if "values" in study:
                raise ConfigError(f"{where}.values: given without a key; a study without key compares its methods")
            continue
        try:
            value_at(cfg, key)
        except (KeyError, TypeError):
            raise ConfigError(f"{where}.key: {key!r} is not a config key") from None
        if key not in (SAMPLING_KEY, TRAINING_SET_KEY) and key.split(".")[0] not in TRAINING_SECTIONS:
            raise ConfigError(f"{where}.key: {key!r} cannot be ablated; allowed: {SAMPLING_KEY}, {TRAINING_SET_KEY} "
                              f"or a key under {', '.join(TRAINING_SECTIONS)}")
        if not study.get("values"):
            raise ConfigError(f"{where}.values: missing or empty; list the values of {key} to compare")
        for value in study["values"]:
            error = jsonschema.exceptions.best_match(validator.iter_errors(with_value_at(cfg, key, value)))
            if error is not None:
                raise ConfigError(f"{where}.values: {value!r} is not a valid {key} ({_describe(error)})")
            if key != SAMPLING_KEY:
                check_path_name(f"{where}.values", variant_name(study["methods"][0], key, value))


def resolve(raw: dict) -> dict:
    """Merge the chosen preset over the base keys and validate. The base keys (the user's own merged in) are
    checked alone, then under each preset, the chosen one first, so that an error names the preset it comes
    from, or none; the datasets and weights files are looked for only for the chosen preset."""
    raw = copy.deepcopy(raw)
    presets = raw.get("presets", {})
    preset = raw.get("preset", "embedded")
    if not isinstance(presets, dict) or preset not in presets:
        allowed = ", ".join(presets) if isinstance(presets, dict) else "(presets is not a mapping)"
        raise ConfigError(f"preset: {preset!r} is not defined under presets; allowed: {allowed}")
    for name, override in presets.items():
        if not isinstance(override, dict):
            raise ConfigError(f"presets.{name}: must be a mapping of keys, found {override!r}")
    validate(with_preset(raw, {}), check_files=False)
    for name in [preset, *(other for other in presets if other != preset)]:  # typos in presets not chosen, too
        try:
            validate(with_preset(raw, presets[name]), check_files=False)
        except ConfigError as err:
            raise ConfigError(f"{err} (in preset {name!r})") from None
    cfg = with_preset(raw, presets[preset])
    validate(cfg)
    _check_sizes(cfg)
    return cfg


def preset_config(raw: dict, preset: str) -> dict:
    """A preset merged over the base keys of a raw config and validated, without looking for its
    datasets or weights on disk (for sizing work on a machine that has neither)."""
    presets = raw.get("presets", {})
    if not isinstance(presets, dict) or preset not in presets:
        raise ConfigError(f"preset: {preset!r} is not defined under presets; allowed: {', '.join(presets)}")
    cfg = with_preset({**raw, "preset": preset}, presets[preset])
    validate(cfg, check_files=False)
    _check_sizes(cfg)
    return cfg


def preset_warnings(base: dict, given: dict, preset: str) -> list[str]:
    """One warning line per key the user set that the chosen preset overrides (a preset's keys win), and one
    per data setting of theirs that the preset's data.settings drops (a list is replaced, not merged).
    `base` is config.yaml as read; `given` is base with the user's files and --config merged over it, before
    the preset. Keys under presets and keys set to the preset's own value are not reported. For a valid config."""
    override = given["presets"][preset]
    sources = {f"presets.{preset}": override}  # and its dataset_overrides, which win for their dataset's settings
    sources.update({f"presets.{preset}.dataset_overrides.{dataset}": part
                    for dataset, part in override.get("dataset_overrides", {}).items()})
    lines = []
    for path, value in _leaves(given):
        if path[0] in ("preset", "presets") or _set_at(base, path) == (path, value):
            continue  # not a key of the user's
        key = ".".join(path)
        for where, tree in sources.items():
            found = _set_at(tree, path)
            if found is None or found[1] == value or (isinstance(value, dict) and isinstance(found[1], dict)):
                continue  # not set, set alike, or mappings that merge
            fix = f"set {key} under {where} or choose another preset"
            if path == ("data", "settings"):
                names = ", ".join(setting_name(s["dataset"], s.get("rho")) for s in found[1])
                lines += [f"warning: data.settings: your setting {setting_name(s['dataset'], s.get('rho'))} is not "
                          f"trained: {where}.data.settings replaces the list ({names}); to train it, {fix}"
                          for s in value if s not in found[1]]
            else:
                lines.append(f"warning: {key}: your {_shown(value)} loses to {where}.{'.'.join(found[0])} = "
                             f"{_shown(found[1])}; to keep yours, {fix}")
    return lines


def _leaves(tree: dict, prefix: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path, value) of every value of `tree` that is not a non-empty mapping."""
    found = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found += _leaves(value, prefix + (key,))
        else:
            found.append((prefix + (key,), value))
    return found


def _set_at(tree: dict, path: tuple):
    """What a (partial) config sets at `path`: (path, value), or (a prefix of path, value) where it holds a value
    that is not a mapping and so replaces everything below; None where it sets nothing."""
    for i, part in enumerate(path):
        if part not in tree:
            return None
        tree = tree[part]
        if not isinstance(tree, dict):
            return path[:i + 1], tree
    return path, tree


def _shown(value) -> str:
    return json.dumps(value, default=str)


def load(path: str | Path, preset: str | None = None) -> dict:
    """Read a config file and resolve it (optionally choosing another preset)."""
    raw = load_yaml(path)
    if preset is not None:
        raw["preset"] = preset
    return resolve(raw)
