"""What the tests share: the repository, running Snakemake on it, reading a dry run's plan, and the
fixtures of machines parts (a SLURM cluster, a browser) and the samplers' small network. Test modules import helpers from here (or from
the helper modules standins, slurm_cluster and browser), never from each other.

`pytest -m "not slow"` is the inner loop; a test that runs the workflow or trains for minutes is marked
slow (CI runs everything)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from coral.unet import build_unet
from slurm_cluster import missing_requirements

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]

# One thread per test process: tiny CPU kernels on 2 shared cores slow down 100x when
# torch's thread pool competes with other processes.
torch.set_num_threads(1)


def snakemake(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (CONFIG,),
              timeout: int = 900) -> subprocess.CompletedProcess:
    """The workflow of this repository in `workdir` (targets go before --config in `args`)."""
    command = SNAKEMAKE + ["-d", str(workdir), "--configfile", *map(str, configfiles), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts from the 'Job stats' table of a dry run ({} when there is nothing to do)."""
    output = result.stdout + result.stderr
    lines = output.splitlines()
    if "Nothing to be done" in output:
        return {}
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats")) + 3
    counts = {}
    for line in lines[start:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: opens the report in headless chromium (skipped without it, "
                                       "fails under CI)")
    config.addinivalue_line("markers", "slow: runs the workflow or trains for minutes (pytest -m 'not slow' "
                                       "leaves it out)")


def pytest_collection_modifyitems(items):
    """Modules with slow tests start first (stable order otherwise), so that the other worker is not left
    with one long module at the end (pyproject: each worker takes whole modules); first of all the SLURM
    module, which mostly waits on the cluster: the other worker's modules use the core it leaves idle."""
    slow_modules = {item.path for item in items if item.get_closest_marker("slow")}
    cluster_modules = {item.path for item in items if "cluster_requirements" in item.fixturenames}
    items.sort(key=lambda item: (item.path not in cluster_modules, item.path not in slow_modules))


@pytest.fixture(scope="session", autouse=True)
def counts_cache(tmp_path_factory):
    """The cache of FLOP counts (coral.flops) for this session and every process it starts: not the user's."""
    os.environ["CORAL_CACHE_DIR"] = str(tmp_path_factory.mktemp("counts_cache"))


@pytest.fixture(scope="session")
def cluster_requirements():
    """Skip a test that needs a local SLURM cluster where none can start (fail under CI, which installs one)."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no SLURM cluster can be started: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser; a skip where none is installed (a failure under CI, whose .ci/run installs it)."""
    found = next(filter(None, map(shutil.which, ["chromium", "chromium-browser", "google-chrome"])), None)
    if found is None:
        reason = "no chromium on PATH (Debian: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def small_unet():
    """A small UNet (1 channel, 10 classes, 8x8 or larger) with random weights, in eval mode: the samplers' network."""
    torch.manual_seed(0)
    net = build_unet({"ch": 32, "ch_mult": [1, 2], "attn": [1], "num_res_blocks": 1, "dropout": 0.0}, 1, 10)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()
