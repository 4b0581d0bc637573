"""Typed config sections: the one object each stage takes, with every field and its type in one place.

Values are validated once, against the schema (coral/schemas/config.schema.yaml, by coral.config);
`Section.of(mapping, where)` only builds the object, refusing a missing or unknown key in one line
(the guard for callers of the API who bypass the config). A test holds the fields equal to the
schema's keys. `as_dict()` gives the plain mapping that lineage records and JSON files store.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

from coral import grid
from coral.config import ConfigError

S = TypeVar("S", bound="Section")


@dataclasses.dataclass(frozen=True)
class Section:
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(field.name for field in dataclasses.fields(cls))

    @classmethod
    def of(cls: type[S], values: Mapping, where: str) -> S:
        """The section of a mapping holding exactly its keys; `where` names it in the error."""
        missing = [key for key in cls.keys() if key not in values]
        unknown = [key for key in values if key not in cls.keys()]
        if missing or unknown:
            problem = f"missing keys {missing}" if missing else f"unknown keys {unknown}"
            raise ConfigError(f"{where}: {problem}; the keys are {', '.join(cls.keys())}")
        return cls(**{key: values[key] for key in cls.keys()})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The epsilon-UNet (docs/method.md §2)."""
    ch: int
    ch_mult: list[int]
    attn: list[int]
    num_res_blocks: int
    dropout: float


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    """The optimisation of one run (docs/method.md §3)."""
    steps: int
    batch_size: int  # the global batch, over train.devices
    micro_batch_size: int  # 0: one pass per device (or the plan's choice for the card)
    devices: int
    lr: float
    warmup: int
    grad_clip: float
    ema_decay: float
    label_drop: str  # 'batch' or 'sample'
    p_uncond: float
    bf16_autocast: bool
    channels_last: bool
    compile: bool
    cuda_graphs: bool  # with compile, on a GPU: the compiled step replays as CUDA graphs
    micro_batch_size: int  # 0: the per-device batch in one pass; else gradient accumulation over parts of this size
    devices: int  # processes (GPUs) of one run, DDP (coral.distributed); train.batch_size is split over them
    checkpoint_every: int
    keep_checkpoints: int
    prune_after_final: bool
    log_every: int
    tensorboard_every: int  # 0: no TensorBoard output (coral.tensorboard_log)


@dataclasses.dataclass(frozen=True)
class SampleConfig(Section):
    """The sampler (docs/method.md §5)."""
    sampler: str  # 'ddpm' or 'ddim'
    steps: int  # DDIM steps
    eta: float
    omega: float | dict  # guidance scale, or one per method (grid.omega_of)
    num_samples: int
    labels: str  # 'stratified' or 'uniform'
    seed: int
    batch_size: int
    bf16_autocast: bool
    compile: bool  # torch.compile the denoising step (coral.compiled_step); images unchanged


@dataclasses.dataclass(frozen=True)
class ExtractorConfig(Section):
    """What the features of a dataset's reference set depend on, besides the extractor's weights."""
    feature_extractor: str  # 'classifier' or 'inception-v3-compat'
    batch_size: int


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(Section):
    """The metrics of one sample set (docs/method.md §6)."""
    feature_extractor: str
    inception_weights_path: str | None
    inception_download: bool  # fetch a missing weights file (rule inception_weights)
    batch_size: int
    prc_neighborhood: int
    kid_subsets: int
    kid_subset_size: int
    prd_clusters_per_class: int
    prd_max_clusters: int
    prd_kmeans_steps: int
    prd_angles: int
    prd_runs: int

    @property
    def extractor(self) -> ExtractorConfig:
        return ExtractorConfig(self.feature_extractor, self.batch_size)


@dataclasses.dataclass(frozen=True)
class ClassifierConfig(Section):
    """The feature classifier of a dataset (docs/method.md §6)."""
    steps: int
    batch_size: int
    lr: float
    width: int
    test_fraction: float
    seed: int
    checkpoint_every: int


# What the network sees in the latent stage, at t = t_fraction T: the clean image (the released code) or
# the image noised to t. Both are scored; latent.tsne_input picks the one the t-SNE embeds.
LATENT_INPUTS = ("clean", "noised")


@dataclasses.dataclass(frozen=True)
class LatentConfig(Section):
    """Bottleneck features and their separation (docs/method.md §6)."""
    t_fraction: float
    per_class: int
    seed: int
    perplexity: float
    knn_k: int
    batch_size: int
    tsne_input: str  # 'clean' (released code) or 'noised': what the t-SNE embeds; both are scored


SECTIONS: dict[str, type[Section]] = {"model": ModelConfig, "train": TrainConfig, "sample": SampleConfig,
                                      "evaluate": EvaluateConfig, "classifier": ClassifierConfig,
                                      "latent": LatentConfig}


def of_setting(cfg: dict, setting: str, name: str) -> Section:
    """Section `name` of a resolved config as one setting sees it (its dataset's overrides merged in)."""
    return SECTIONS[name].of(grid.setting_config(cfg, setting)[name], name)


def of_dataset(cfg: dict, dataset: str, name: str) -> Section:
    """Section `name` of a dataset (for its reference set, features and classifier)."""
    return SECTIONS[name].of(grid.dataset_section(cfg, dataset, name), name)
