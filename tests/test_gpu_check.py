"""The GPU check's CPU dry path, and the loops it measures: no host synchronisation between log steps."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from coral.config import load, run_config
from coral.diffusion import Diffusion
from coral.gpu_check import COMPILED_STEPS, VARIANTS, _TrainingLoop
from coral.methods import NAMES as OBJECTIVES
from coral.sample import denoise
from coral.sections import SampleConfig
from coral.unet import build_unet

REPO = Path(__file__).resolve().parent.parent
# Ops that copy a device value to the host (item(), bool(), int(), data-dependent shapes): each one
# stalls a GPU loop until the device has caught up.
SYNCING_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default, torch.ops.aten.unique_consecutive.default,
               torch.ops.aten._unique2.default, torch.ops.aten.is_nonzero.default}


class FailOnSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS:
            raise AssertionError(f"host synchronisation inside the loop: {func}")
        return func(*args, **(kwargs or {}))


def test_dry_run_measures_every_objective_size_and_variant(tmp_path):
    subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), "--dry-run", str(tmp_path)], check=True,
                   cwd=REPO, capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable})
    result = json.loads((tmp_path / "gpu_check-cpu-dry-run.json").read_text())
    measured = {(r["image_size"], r["objective"], r["dtype"], r["layout"]) for r in result["training"]
                if r["ms_per_step"] > 0 and r["flops_per_step"] > 0}
    assert measured == {(size, o, d, l) for size in (32, 64) for o in OBJECTIVES for d, l in VARIANTS}
    flops = {(r["image_size"], r["objective"]): r["flops_per_step"] for r in result["training"]}
    for size in (32, 64):  # CBDM runs the network on a doubled batch; T2H adds no network pass
        assert flops[size, "cbdm"] == pytest.approx(2 * flops[size, "ddpm"], rel=0.01)
        assert flops[size, "t2h"] == pytest.approx(flops[size, "ddpm"], rel=0.01)
    eager = [r for r in result["sampling"] if r["step"] == "eager"]
    assert len(eager) == 8 and all(r["ms_per_denoising_step"] > 0 for r in eager)
    compiled = {(r["image_size"], r["step"]): r for r in result["sampling"] if r["step"] != "eager"}
    assert compiled.keys() == {(size, step) for size in (32, 64) for step in COMPILED_STEPS}
    assert compiled[32, "compiled"]["ms_per_denoising_step"] > 0 and compiled[32, "compiled"]["compile_seconds"] > 0
    assert all("skipped" in row for key, row in compiled.items() if key != (32, "compiled"))  # the dry run compiles once


@pytest.fixture(scope="module")
def smoke():
    return load(REPO / "config.yaml", preset="smoke")


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_training_loop_never_waits_for_the_device(smoke, objective):
    loop = _TrainingLoop(run_config(smoke, "animals-rho0.1", objective, 0), torch.device("cpu"), in_channels=1)
    # A GPU runs fused Adam (coral.train.build_training); the CPU's foreach Adam reads its step counts
    # on the host, which is no wait there.
    loop.setup.optimizer = torch.optim.Adam(loop.setup.params, fused=True)
    loop()  # the first step may initialise lazily
    with FailOnSync():
        for _ in range(3):
            loop()


def test_sampling_loop_never_waits_for_the_device(smoke):
    run = run_config(smoke, "animals-rho0.1", "ddpm", 0)
    model = build_unet(run["model"], 1, 10).eval()
    for sampler in ("ddpm", "ddim"):
        cfg = SampleConfig.of({**smoke["sample"], "sampler": sampler, "steps": 3, "eta": 1.0, "omega": 1.0}, "sample")
        with FailOnSync():
            denoise(model, Diffusion(5), torch.arange(4) % 10, torch.arange(4), cfg, (1, 8, 8))
