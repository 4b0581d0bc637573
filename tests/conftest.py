import os

import pytest
import torch

from slurm_cluster import missing_requirements

# One thread per test process: tiny CPU kernels on 2 shared cores slow down 100x when
# torch's thread pool competes with other processes.
torch.set_num_threads(1)


@pytest.fixture
def cluster_requirements():
    """Skip a test that needs a local SLURM cluster where none can start (fail under CI, which installs one)."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no SLURM cluster can be started: {reason}")
        pytest.skip(reason)
