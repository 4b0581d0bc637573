"""FLOPs, op counts and memory of the networks on torch's 'meta' device: no memory, no compute.

What the cost model (coral.plan) prices: a training step's FLOPs, the ATen ops it dispatches (each a
kernel launch in eager mode) and the bytes it saves for the backward; a forward pass's FLOPs, ops
and peak of live activations; parameter bytes; the evaluation classifier's figures.

Every Snakemake start prices every job (a dry run, and each SLURM job, which parses the workflow again),
and counting takes about half a second per network, torch's import aside. So each count is kept in a
file of this machine's cache (CORAL_CACHE_DIR, else ~/.cache/coral) named by a hash of coral's source and
torch's version: a change to either counts afresh, and a start that finds its counts imports no torch.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from coral.io import read_json, write_json


@functools.cache
def cache_file() -> Path:
    """This code's file of counts in this machine's cache."""
    code = hashlib.sha256(importlib.metadata.version("torch").encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        code.update(source.read_bytes())
    root = Path(os.environ.get("CORAL_CACHE_DIR") or Path.home() / ".cache" / "coral")
    return root / f"counts-{code.hexdigest()[:16]}.json"


def _read(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):  # none yet, or damaged: counted again
        return {}


@functools.cache
def _counts() -> dict:
    """key -> count: this process's copy of the cache file, read at its first count."""
    return _read(cache_file())


def _kept(name: str, key: list, count: Callable[[], object]):
    """count() for `key` (JSON), from this process, else the cache file, else counted and stored there."""
    text, counts = json.dumps([name, *key], sort_keys=True), _counts()
    if text not in counts:
        counts[text] = json.loads(json.dumps(count()))  # as read back: tuples are lists
        try:  # with what other processes stored meanwhile
            write_json(cache_file(), {**_read(cache_file()), text: counts[text]})
        except OSError:  # no cache where none can be written: count again next time
            pass
    return counts[text]


def _cdist_flops(x1_shape, x2_shape, *args, out_shape=None, **kwargs) -> int:
    """torch.cdist (p=2), T2H's posterior: a difference, a square and a sum per pair and feature."""
    return 3 * math.prod(out_shape) * x1_shape[-1]


def _flop_counter():
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    return FlopCounterMode(display=False, custom_mapping={torch.ops.aten._cdist_forward: _cdist_flops})


def _live_bytes():
    """A dispatch mode that tracks the bytes of live tensors (each op's fresh outputs until they are
    freed) and their peak: the activation memory of a forward pass without autograd."""
    import weakref
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveBytes(TorchDispatchMode):
        live = peak = 0

        def _free(self, nbytes):
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not any(r.alias_info is not None for r in func._schema.returns):  # views allocate nothing
                for tensor in tree_flatten(out)[0]:
                    if isinstance(tensor, torch.Tensor):
                        nbytes = tensor.untyped_storage().nbytes()
                        self.live += nbytes
                        weakref.finalize(tensor, self._free, nbytes)
                self.peak = max(self.peak, self.live)
            return out

    return LiveBytes()


def _op_counter():
    """A dispatch mode that counts the ATen ops run under it: in eager mode each is a kernel launch (or
    a few) that the host issues one after the other."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        ops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops += 1
            return func(*args, **(kwargs or {}))

    return OpCounter()


def _param_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def _unet(model_json: str, channels: int, num_classes: int):
    """The UNet of a model config on the meta device (weights without memory)."""
    import torch
    from coral.unet import build_unet
    with torch.device("meta"):
        return build_unet(json.loads(model_json), channels, num_classes)


def _objective(model, run: dict):
    """A run's objective on the meta device, around `model`."""
    import torch
    from coral.diffusion import Diffusion
    from coral.objectives import build_objective
    meta = torch.device("meta")
    with meta:
        diffusion = Diffusion.from_config(run["diffusion"]).to(meta)
        return build_objective(run["objective"]["name"], run["objective"]["hparams"], diffusion,
                               torch.ones(model.class_embedding.num_embeddings), model)


def _structure(run: dict) -> list:
    """What sizes a run's networks: the model, the objective and its integer hyperparameters (sizes such as
    proj_dim; temperatures and weights change no count)."""
    objective = run["objective"]
    return [run["model"], objective["name"], {k: v for k, v in objective["hparams"].items() if type(v) is int}]


def parameter_bytes(run: dict, channels: int, num_classes: int) -> list[int]:
    """Parameter bytes of a run's UNet and of its objective (CORAL's projection head)."""
    def count():
        model = _unet(json.dumps(run["model"]), channels, num_classes)
        return _param_bytes(model), _param_bytes(_objective(model, run))

    return _kept("parameter_bytes", [*_structure(run), channels, num_classes], count)


def step_flops(run: dict, channels: int, num_classes: int) -> dict:
    """One optimisation step of a run at train.batch_size on the meta device: FLOPs of the objective's
    forward and backward, the ATen ops they dispatch and the bytes saved for the backward (parameters
    excluded)."""
    batch, size = run["train"]["batch_size"], run["data"]["image_size"]

    def count():
        import torch
        model = _unet(json.dumps(run["model"]), channels, num_classes).train()
        loss = _objective(model, run)
        parameters = {id(p) for p in [*model.parameters(), *loss.parameters()]}
        saved = {}

        def pack(tensor):
            if id(tensor) not in parameters:
                saved[id(tensor)] = tensor
            return tensor

        with torch.device("meta"):
            x0, y = torch.zeros(batch, channels, size, size), torch.zeros(batch, dtype=torch.long)
            counter, ops = _flop_counter(), _op_counter()
            with counter, ops, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                noise = torch.zeros_like(x0)
                loss(model, x0, y, y, y, noise, **loss.draw(x0, y, y, y, noise))["loss"].backward()
        return {"flops": counter.get_total_flops(), "ops": ops.ops,
                "saved_bytes": sum(t.numel() * t.element_size() for t in saved.values())}

    return _kept("step_flops", [*_structure(run), size, channels, num_classes, batch], count)


def unet_forward(model_json: str, image_size: int, channels: int, batch: int) -> dict:
    """One forward pass of the UNet without autograd on the meta device: FLOPs per image, the ATen ops
    it dispatches and the peak of live activation bytes at this batch."""
    def count():
        import torch
        with torch.device("meta"), torch.no_grad():
            model = _unet(model_json, channels, 1).eval()
            with _flop_counter() as counter, _op_counter() as ops, _live_bytes() as live:
                x, t = torch.zeros(batch, channels, image_size, image_size), torch.zeros(batch, dtype=torch.long)
                model(x, t, t)
        return {"flops_per_image": counter.get_total_flops() / batch, "ops": ops.ops, "live_bytes": live.peak}

    return _kept("unet_forward", [json.loads(model_json), image_size, channels, batch], count)


def classifier_figures(channels: int, num_classes: int, width: int, image_size: int, batch: int) -> dict:
    """The evaluation classifier on the meta device: FLOPs per image of a training step (forward and
    backward) and of a forward pass, bytes saved for the backward, parameter bytes, feature size."""
    return _kept("classifier_figures", [channels, num_classes, width, image_size, batch],
                 lambda: _classifier_figures(channels, num_classes, width, image_size, batch))


def _classifier_figures(channels: int, num_classes: int, width: int, image_size: int, batch: int) -> dict:
    import torch
    import torch.nn.functional as F
    from coral.classifier import SmallClassifier

    with torch.device("meta"):
        model = SmallClassifier(channels, num_classes, width)
        x = torch.zeros(batch, channels, image_size, image_size)
        with torch.no_grad(), _flop_counter() as forward:
            model(x)
        parameters, saved = {id(p) for p in model.parameters()}, {}

        def pack(tensor):
            if id(tensor) not in parameters:
                saved[id(tensor)] = tensor.numel() * tensor.element_size()
            return tensor

        with _flop_counter() as step, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            F.cross_entropy(model(x), torch.zeros(batch, dtype=torch.long)).backward()
    return {"train_flops_per_image": step.get_total_flops() / batch,
            "forward_flops_per_image": forward.get_total_flops() / batch,
            "saved_bytes": sum(saved.values()), "model_bytes": _param_bytes(model), "feature_dim": model.feature_dim}


