"""What a stage's output depends on: its identity, and the settings that leave its numbers alone.

A job's identity is the part of its config that changes its numbers, in one canonical form: keys
sorted, whole numbers written as integers (1.0 and 1 are one value), keys its dataset never reads left
out, a per-method guidance resolved to the method's value. It is

- the rule's `identity` param, which Snakemake compares with its record of the last run to decide a
  rerun (docs/reruns.md): a no-op edit (a restated value, another key order, an unused dataset root,
  TensorBoard or logging switched on) changes no identity and reruns nothing;
- in each artifact's lineage record, beside the config it ran with, and what a training job compares
  before it resumes a step checkpoint or reuses a finished model (coral.reuse).

Everything else a job reads (where the data lives, inference batch sizes, logging, checkpoint cadence,
compilation, TensorBoard) reaches it in a `Settings` mapping that Snakemake does not compare.

A stage whose numbers change on purpose gets a higher entry in VERSIONS: its identity then carries the
version, so exactly that stage's outputs rerun, and the workflow's start says why. Version 1 is not
written, so identities of outputs made before versions existed stay what they were.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

# stage -> version of its numerics, with the reason of each raise (what the workflow's start prints).
VERSIONS: dict[str, int] = {"claims": 2}
CHANGES: dict[str, str] = {
    "claims": "claims version 2: a claim holds only where every row is covered; C9 picks each method's best omega "
              "on one half of the reference set and tests it on the other; the no-worse margin is the mean of the "
              "paired seeds only; a value that is not finite is inconclusive; a range claim never pools methods",
}

# Train keys that leave the weights alone: how a run is computed (the same maths, up to rounding), logged
# and checkpointed.
TRAIN_SETTINGS = ("channels_last", "compile", "cuda_graphs", "micro_batch_size", "devices", "checkpoint_every",
                  "keep_checkpoints", "prune_after_final", "log_every", "tensorboard_every")
# Evaluate keys that leave the metrics alone: how features are batched, where the weights are, how they got there.
EVALUATE_SETTINGS = ("batch_size", "inception_weights_path", "inception_download")
# Datasets whose reference set is a balanced subset drawn with data.subsample_seed.
SEEDED_REFERENCE = ("celeba5",)


class Settings(Mapping):
    """A job's whole config section, read-only. Snakemake compares only builtin values between runs,
    so a section passed as Settings can change without a rerun; its `identity` param decides that."""

    def __init__(self, values: Mapping):
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def plain(value: Any) -> Any:
    """`value` with every mapping (Settings included) turned into a plain dict, recursively."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def canonical(value: Any) -> Any:
    """Keys sorted and whole numbers as integers, recursively."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def digest(identity: Mapping) -> str:
    """A short name for an identity (folders of step checkpoints and kept outputs)."""
    text = json.dumps(canonical(identity), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _versioned(stage: str, fields: dict) -> dict:
    if VERSIONS.get(stage, 1) > 1:
        fields = {**fields, "version": VERSIONS[stage]}
    return canonical(fields)


def _split_fields(data: Mapping) -> dict:
    fields = {"dataset": data["dataset"], "image_size": data["image_size"],
              "training_set": data.get("training_set", "long_tailed")}
    if data.get("rho") is not None:  # a balanced pool made long-tailed: a seeded draw
        fields.update(rho=data["rho"], subsample_seed=data["subsample_seed"])
    return fields


def _reference_fields(data: Mapping) -> dict:
    fields = {"dataset": data["dataset"], "image_size": data["image_size"]}
    if data["dataset"] in SEEDED_REFERENCE:
        fields["subsample_seed"] = data["subsample_seed"]
    return fields


def _classifier_fields(section: Mapping, hflip: bool) -> dict:
    return {**{key: value for key, value in section.items() if key != "checkpoint_every"}, "hflip": hflip}


def _run_fields(run_cfg: Mapping) -> dict:
    data = {**_split_fields(run_cfg["data"]), "hflip": run_cfg["data"]["hflip"]}
    train = {key: value for key, value in run_cfg["train"].items() if key not in TRAIN_SETTINGS}
    return {**{key: value for key, value in run_cfg.items() if key not in ("data", "train")},
            "data": data, "train": train}


def _sample_fields(section: Mapping, method: str) -> dict:
    omega = section["omega"]
    fields = {"sampler": section["sampler"], "omega": omega[method] if isinstance(omega, Mapping) else omega,
              "num_samples": section["num_samples"], "labels": section["labels"], "seed": section["seed"],
              "bf16_autocast": section["bf16_autocast"]}
    if section["sampler"] == "ddim":  # the ancestral sampler runs all T steps and has no eta
        fields.update(steps=section["steps"], eta=section["eta"])
    return fields


def split(data: Mapping) -> dict:
    """A training set (rules subsample, subsample_diagnosis): the dataset at its size, and for a
    balanced pool its rho and seed."""
    return _versioned("subsample", _split_fields(data))


def reference(data: Mapping) -> dict:
    """A dataset's balanced reference set (rule reference)."""
    return _versioned("reference", _reference_fields(data))


def classifier(section: Mapping, hflip: bool) -> dict:
    """The evaluation classifier of a dataset (rule train_classifier)."""
    return _versioned("train_classifier", _classifier_fields(section, hflip))


def features(extractor: Mapping) -> dict:
    """A dataset's reference features (rule reference_features); the weights are an input file."""
    return _versioned("reference_features", {"feature_extractor": extractor["feature_extractor"]})


def run(run_cfg: Mapping) -> dict:
    """A training run (rule train): everything that changes its weights."""
    return _versioned("train", _run_fields(run_cfg))


def sample(section: Mapping, method: str) -> dict:
    """A sample set of a run (rule sample): the sampler and guidance. Images are seeded one by one, so
    the batch size leaves them alone; a compiled step (sample.compile) changes them only by float rounding."""
    return _versioned("sample", _sample_fields(section, method))


def evaluate(section: Mapping) -> dict:
    """The metrics of a sample set (rule evaluate); the extractor's weights are an input file."""
    return _versioned("evaluate", {key: value for key, value in section.items()
                                   if key not in EVALUATE_SETTINGS})


def latent(section: Mapping) -> dict:
    """The bottleneck features and separation of a run (rule latent)."""
    return _versioned("latent", {key: value for key, value in section.items() if key != "batch_size"})


def table(stage: str) -> dict:
    """A table: made from its input files alone, plus its stage's version."""
    return _versioned(stage, {})


# The identity of each stage from the config its lineage record holds (records made before
# identities were written into them: version 1).
_FROM_RECORD = {
    "subsample": lambda cfg: _split_fields({**cfg["data"], "rho": cfg["rho"]}),
    "reference": lambda cfg: _reference_fields(cfg["data"]),
    "train_classifier": lambda cfg: _classifier_fields(cfg["classifier"], cfg["hflip"]),
    "reference_features": lambda cfg: {"feature_extractor": cfg["evaluate"]["feature_extractor"]},
    "train": _run_fields,
    "sample": lambda cfg: _sample_fields(cfg["sample"], cfg["run"]["method"]),
    "evaluate": lambda cfg: {key: value for key, value in cfg["evaluate"].items()
                             if key not in EVALUATE_SETTINGS},
    "latent": lambda cfg: {key: value for key, value in cfg["latent"].items() if key != "batch_size"},
}


def of_checkpoint(stage: str, state: Mapping) -> tuple[dict, dict | None]:
    """A step checkpoint's identity and inputs (rules train and train_classifier). Checkpoints written
    before identities were give the one their config gives, and their inputs where they recorded them."""
    if "identity" in state:
        return state["identity"], state["inputs"]
    if stage == "train":
        return recorded({"stage": "train", "config": state["config"]}), None
    old = state["inputs"]  # the classifier's: its config, hflip and the reference set's SHA-256
    config = {"classifier": old["classifier"], "hflip": old["hflip"]}
    return recorded({"stage": "train_classifier", "config": config}), {"reference": old["reference_sha256"]}


def recorded(record: Mapping) -> dict:
    """The identity an artifact was made with: its lineage record's, or for a record written before
    identities were, the one its config gives (at version 1)."""
    if "identity" in record:
        return record["identity"]
    from_config = _FROM_RECORD.get(record["stage"])
    return canonical(from_config(record["config"])) if from_config else {}
