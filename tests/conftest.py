import os

import pytest
import torch

from slurm_cluster import missing_requirements

# One thread per test process: tiny CPU kernels on 2 shared cores slow down 100x when
# torch's thread pool competes with other processes.
torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: opens the report in headless chromium (skipped without it, "
                                       "fails under CI)")
    config.addinivalue_line("markers", "slow: runs the workflow or trains for minutes (pytest -m 'not slow' skips it)")


@pytest.fixture(scope="session")
def cluster_requirements():
    """Skip a test that needs a local SLURM cluster where none can start (fail under CI, which installs one)."""
    reason = missing_requirements()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"no SLURM cluster can be started: {reason}")
        pytest.skip(reason)


# The longest modules (seconds on the 2-core reference machine) start first, so that the other worker
# is not left with one long module at the end.
LONGEST_FIRST = ("test_slurm.py", "test_workflow.py", "test_rehearsal.py", "test_step.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: each module keeps its own order
