"""When a long job must stop: its SLURM time limit (or a time budget) and SLURM's termination signals.

A cluster partition caps a job's wall time far below what a paper-scale training run needs. Training
and sampling therefore check a `Deadline` between steps: shortly before the limit, or when SLURM
sends SIGTERM/SIGUSR1, they save their state and exit with `EXIT_RESUBMIT`; Snakemake resubmits the
job (the rule's retries) and the next job continues from the saved state.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator

log = logging.getLogger(__name__)

EXIT_RESUBMIT = 75  # EX_TEMPFAIL: stopped early on purpose, state saved; run the job again to continue
SAFETY_SECONDS = 20.0  # kept free beyond the measured cost of one more step and one checkpoint


class OutOfTime(Exception):
    """A job stopped before its time limit after saving its state; rerunning it continues."""


def parse_slurm_duration(text: str) -> float | None:
    """Seconds of a SLURM duration ('[days-]hours:minutes:seconds', 'minutes:seconds', 'minutes');
    None for 'UNLIMITED', 'INFINITE' or 'NOT_SET'."""
    text = text.strip()
    if text.upper() in ("UNLIMITED", "INFINITE", "NOT_SET", ""):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not match:
        raise ValueError(f"unrecognised SLURM duration {text!r}")
    days, *parts = match.groups()
    numbers = [int(p) for p in parts if p is not None]
    if days is not None:  # days-hours[:minutes[:seconds]]
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = 0, numbers[0], 0
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def slurm_seconds_left() -> float | None:
    """Seconds until this SLURM job's time limit, or None outside SLURM or without a limit."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        if out.strip() == "INVALID":  # squeue's time left of a job past its limit (in SLURM's grace time)
            return 0.0
        return parse_slurm_duration(out.splitlines()[0]) if out.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError) as err:
        log.warning("could not read the time left of SLURM job %s (%s); relying on SIGTERM", job, err)
        return None


class Deadline:
    """Tells a loop when to stop: `end` (time.monotonic() seconds, None = no limit) or a received signal.

    Each check is given the measured cost of what still has to happen before the job ends
    (one more step, writing a checkpoint); the loop stops when that no longer fits.
    """

    def __init__(self, end: float | None):
        self.end = end
        self.signalled: int | None = None

    @classmethod
    def for_this_job(cls, budget_seconds: float | None = None) -> "Deadline":
        """The deadline of this process: a time budget if given (`CORAL_TIME_BUDGET` seconds in the
        environment also sets one), otherwise the SLURM job's time limit.

        Use it as a context manager: inside, the first SIGTERM or SIGUSR1 (what SLURM sends before a
        time limit or preemption) only asks the loop to stop at its next check; a second one
        terminates as usual.
        """
        budget = budget_seconds if budget_seconds is not None else os.environ.get("CORAL_TIME_BUDGET")
        left = float(budget) if budget is not None else slurm_seconds_left()
        if left is not None:
            log.info("this job stops for resubmission %.0f s from now, or earlier on SIGTERM/SIGUSR1", left)
        return cls(time.monotonic() + left if left is not None else None)

    def __enter__(self) -> "Deadline":
        self._previous = {}
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for signum in (signal.SIGTERM, signal.SIGUSR1):
                self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum, _frame) -> None:
        if self.signalled is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        log.warning("received signal %d: stopping at the next checkpoint", signum)
        self.signalled = signum

    def must_stop(self, seconds_needed: float) -> bool:
        """True once a signal came, or when fewer than `seconds_needed` + SAFETY_SECONDS are left."""
        if self.signalled is not None:
            return True
        return self.end is not None and self.end - time.monotonic() < seconds_needed + SAFETY_SECONDS


@contextlib.contextmanager
def exit_for_resubmission() -> Iterator[None]:
    """Turn OutOfTime into exit code EXIT_RESUBMIT (for workflow jobs, whose retries resubmit them)."""
    try:
        yield
    except OutOfTime as err:
        log.warning("%s", err)
        sys.exit(EXIT_RESUBMIT)
