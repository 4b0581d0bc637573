"""A job's process: where its output goes, how many threads it takes, and how an error ends it (one line
on the console, the traceback in its log). Every rule's script starts with setup_job (through coral.cli,
which the scripts import it from), so do the processes of a run on several devices (coral.train)."""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from coral.config import ConfigError
from coral.io import DatasetError, Locked
from coral.lineage import DamagedArtifact

# Errors whose message is the whole story (it names the file or key and what to do): one line, no traceback.
ONE_LINE_ERRORS = (ConfigError, DatasetError, DamagedArtifact, Locked, OSError)


_job_log: str | None = None  # the log file setup_job sends this job's output to


def setup_job(log: str | Path | None, threads: int | None, append: bool = False, level: int = logging.INFO) -> None:
    """Send logging and stderr (progress bars) to `log` (a rule's log file, or None for the console)
    and cap torch's threads and those of numpy's and scikit-learn's BLAS and OpenMP pools. With a log,
    an uncaught error leaves its traceback there and one line on the console (the job exits 1).
    append: add to the log (the processes of a run on several devices, coral.distributed)."""
    global _job_log
    if threads:
        import torch
        from threadpoolctl import threadpool_limits
        torch.set_num_threads(threads)
        threadpool_limits(threads)
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        sys.stderr = open(log, "a" if append else "w", buffering=1)
        sys.excepthook = lambda kind, error, trace: _report(kind, error, trace, log)
    _job_log = None if log is None else str(log)
    logging.basicConfig(level=level, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def job_log() -> str | None:
    """The log file of this job (setup_job's), None for the console."""
    return _job_log


def _report(kind, error, trace, log) -> None:
    traceback.print_exception(kind, error, trace)  # into the log
    line = f"error: {error}" if isinstance(error, ONE_LINE_ERRORS) else \
        f"error: {kind.__name__}: {' '.join(str(error).split())[:300]} (traceback in {log})"
    print(line, file=sys.__stderr__)
