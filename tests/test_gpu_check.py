"""The GPU check's CPU dry path, and the loops it measures: no host synchronisation between log steps."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from coral.config import load
from coral.grid import run_config
from coral.diffusion import Diffusion
from coral import measured
from coral.gpu_check import (BUDGET_S, ESTIMATE_S, Check, _TrainingLoop, measurement_plan,
                             paper_config)
from coral.methods import NAMES as OBJECTIVES
from coral.sample import denoise
from coral.sections import SampleConfig
from coral.unet import build_unet

from conftest import REPO

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


@pytest.mark.slow  # compiles every kind of step
def test_dry_run_measures_every_kind_and_the_plan_reads_it(tmp_path):
    subprocess.run(["bash", str(REPO / "benchmarks/gpu_check.sh"), "--dry-run", str(tmp_path)], check=True,
                   cwd=REPO, capture_output=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable})
    path = tmp_path / "gpu_check-cpu-dry-run.json"
    result = json.loads(path.read_text())
    training, sampling = result["training"], result["sampling"]
    eager = {(r["image_size"], r["objective"], r["dtype"], r["batch_size"]) for r in training
             if not r["compile"] and r["ms_per_step"] > 0 and r["flops_per_step"] > 0}
    paper = {32: "fp32", 64: "bf16"}  # the paper preset's precision per size; the dry run's batch is 16
    other = {32: "bf16", 64: "fp32"}
    expected = {(size, "ddpm", paper[size], 16 // devices) for size in paper for devices in (1, 2, 4, 8)}
    expected |= {(size, "cbdm", paper[size], batch) for size in paper for batch in (16, 2)}
    expected |= {(size, "ddpm", other[size], batch) for size in paper for batch in (16, 2)}
    expected |= {(size, objective, paper[size], 16) for size in paper
                 for objective in ("t2h", "coral", "coral_ambient")}
    assert eager == expected
    flops = {(r["image_size"], r["objective"], r["batch_size"]): r["flops_per_step"]
             for r in training if "flops_per_step" in r}
    for size in paper:  # CBDM runs the network on a doubled batch; T2H adds no network pass
        assert flops[size, "cbdm", 16] == pytest.approx(2 * flops[size, "ddpm", 16], rel=0.01)
        assert flops[size, "t2h", 16] == pytest.approx(flops[size, "ddpm", 16], rel=0.01)
        assert flops[size, "ddpm", 2] == pytest.approx(flops[size, "ddpm", 16] / 8, rel=0.01)
    # one compiled configuration (dynamo with the eager backend), both batches: the second recompiles
    compiled = {(r["image_size"], r["batch_size"]) for r in training if r["compile"] and "ms_per_step" in r}
    assert compiled == {(64, 16), (64, 2)}
    assert all(r["skipped"] for r in training if r["cuda_graphs"])  # no CUDA device (or not merged yet)
    assert {(r["image_size"], r["batch_size"]) for r in sampling if not r["compile"] and r["ms_per_denoising_step"] > 0} \
        == {(size, batch) for size in paper for batch in (4, 2)}
    compiled_sampling = [r for r in sampling if r["compile"]]  # one measured (no CUDA graphs on a CPU), one dry-run skip
    assert [("ms_per_denoising_step" in r, r["cuda_graphs"]) for r in compiled_sampling] == [(True, False), (False, False)]
    read = measured.read_benchmark(path)  # the plan keeps the measured rows
    assert len(read["training"]) == len(eager) + len(compiled)


def test_the_budget_goes_to_what_matters_first():
    groups = measurement_plan()
    eager = [g for g in groups if g.mode == "eager"]
    assert groups[:len(eager)] == eager  # every eager step (the plan's figures for every job) first
    training = sum(len(g.batches) for g in eager if g.phase == "training")
    sampling = sum(len(g.batches) for g in eager if g.phase == "sampling")
    assert (training, sampling) == (22, 4)  # per size: DDPM at 4 batches, CBDM and the other precision at 2, 3 objectives
    assert ESTIMATE_S["start"] + 3 * training + 8 * sampling == 118 <= BUDGET_S / 3
    first = groups[len(eager)]
    assert (first.mode, first.size, first.batches[0]) == ("cuda_graphs", 64, 1 / 8)  # the 8-GPU goal's step
    cfg = paper_config(REPO / "config.yaml", dry_run=True)
    check = Check(cfg, torch.device("cpu"), dry_run=False)
    check.started = time.perf_counter() - (BUDGET_S - ESTIMATE_S["start"] - 2)  # 2 s left: no eager step fits
    assert check.skip_reason(eager[0], 0).startswith("budget: ")
    check.started = time.perf_counter()
    assert check.skip_reason(eager[0], 0) is None


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
