"""Checkpoint files: atomic writes with a SHA-256 sidecar, step checkpoints, the newest intact one,
and the trained model of a run's checkpoint.

A checkpoint `X.pt` is written first, then `X.pt.sha256`, each atomically: a checkpoint without a
matching checksum was interrupted or damaged, and resuming skips it for the one before.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable

import torch

from coral import lineage
from coral.diffusion import Diffusion
from coral.identity import digest
from coral.io import atomic_path, checksum_path, sha256_file
from coral.tensors import default_device
from coral.unet import UNet, build_unet

log = logging.getLogger(__name__)


def save(path: Path, state: dict) -> None:
    """torch.save `state` to `path`, then its SHA-256 to `path`.sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        digest = sha256_file(tmp)
    with atomic_path(checksum_path(path)) as tmp:
        tmp.write_text(digest + "\n")


def load(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)


def step_path(folder: Path, step: int) -> Path:
    return folder / f"step-{step:08d}.pt"


def step_checkpoints(folder: Path) -> list[Path]:
    """The step-N.pt files of `folder`, oldest first."""
    return sorted(folder.glob("step-*.pt"), key=lambda p: int(p.stem.split("-")[1]))


def is_intact(path: Path) -> bool:
    checksum = checksum_path(path)
    return checksum.exists() and checksum.read_text().strip() == sha256_file(path)


def newest_intact(folder: Path) -> tuple[Path, dict] | None:
    """The newest step checkpoint of `folder` whose checksum matches, skipping damaged ones with a
    warning (in the job's log and on the console)."""
    for path in reversed(step_checkpoints(folder)):
        if is_intact(path):
            return path, load(path)
        console_warning(f"checkpoint {path} does not match its checksum (interrupted or damaged); trying the "
                        "previous one")
    return None


def console_warning(message: str) -> None:
    """A warning for the job's log and, when the log is not the console, for the console too."""
    log.warning(message)
    if sys.stderr is not sys.__stderr__:
        print(f"warning: {message}", file=sys.__stderr__, flush=True)


def resume_point(folder: Path, identity: dict, inputs: dict, identity_of: Callable[[dict], tuple[dict, dict | None]]
                 ) -> tuple[Path, dict] | None:
    """The newest intact step checkpoint of `folder` written for `identity` from `inputs` (None: start
    from step 0). Step checkpoints of another identity or other inputs are set aside, never deleted: moved
    to `folder/<digest>/`, from where a later job of that identity and those inputs takes them back.
    `identity_of(state)` gives a checkpoint's (identity, inputs or None where it did not record them)."""
    def usable() -> tuple[Path, dict] | None:
        resumed = newest_intact(folder)
        if resumed is None:
            return None
        theirs, their_inputs = identity_of(resumed[1])
        if theirs == identity and their_inputs in (None, inputs):
            return resumed
        aside = folder / aside_name(theirs, their_inputs)
        why = "for another config" if theirs != identity else "from other inputs"
        console_warning(f"{folder}: its step checkpoints were written {why}; they are set aside in {aside} "
                        "and this run starts from step 0")
        _move_steps(folder, aside)
        return None

    resumed = usable()
    own = folder / aside_name(identity, inputs)
    if resumed is None and step_checkpoints(own):
        log.info("taking back the step checkpoints of this config and inputs set aside in %s", own)
        _move_steps(own, folder)
        if not any(own.iterdir()):
            own.rmdir()
        resumed = usable()
    return resumed


def aside_name(identity: dict, inputs: dict | None) -> str:
    """The folder, under a run's checkpoints/, of step checkpoints set aside for another identity or inputs."""
    return digest({"identity": identity, "inputs": inputs})


def _move_steps(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for path in step_checkpoints(source):
        for file in (path, checksum_path(path)):
            if file.exists():
                os.replace(file, target / file.name)


def rng_states(device: torch.device) -> dict:
    """The random-number states a resumed run needs: the CPU's and, on a GPU, the device's."""
    states = {"rng_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["rng_cuda"] = torch.cuda.get_rng_state()
    return states


def restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["rng_cpu"])
    if device.type == "cuda" and "rng_cuda" in state:
        torch.cuda.set_rng_state(state["rng_cuda"])


def prune(folder: Path, keep: int) -> None:
    """Remove all but the newest `keep` step checkpoints of `folder`."""
    paths = step_checkpoints(folder)
    for old in paths[:len(paths) - keep] if keep > 0 else paths:
        remove(old)


def model_from_state(state: dict, device: torch.device | None = None) -> tuple[UNet, Diffusion, dict]:
    """The EMA network of a loaded run checkpoint (eval mode), its diffusion and its run config."""
    run_cfg = state["config"]
    model = build_unet(run_cfg["model"], state["in_channels"], len(state["class_names"]))
    model.load_state_dict(state["ema"])
    model.eval().requires_grad_(False)
    device = device or default_device()
    return model.to(device), Diffusion.from_config(run_cfg["diffusion"]).to(device), run_cfg


def load_model(path: str | Path, device: torch.device | None = None) -> tuple[UNet, Diffusion, dict]:
    """The EMA network of a run's checkpoint file, verified against its lineage record (see model_from_state)."""
    with lineage.reading(path, "the trained model", "train"):
        state = load(path)
    return model_from_state(state, device)
