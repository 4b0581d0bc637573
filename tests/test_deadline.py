"""Deadlines of long jobs: SLURM durations, the stop rule, and signals."""
import os
import signal
import time

import pytest

from coral.deadline import SAFETY_SECONDS, Deadline, parse_slurm_duration, slurm_seconds_left


@pytest.mark.parametrize("text, seconds", [
    ("59", 59 * 60), ("5:30", 330), ("1:02:03", 3723), ("2-00:00:10", 2 * 86400 + 10),
    ("1-02", 86400 + 2 * 3600), ("UNLIMITED", None), ("INFINITE", None), ("NOT_SET", None),
])
def test_slurm_durations(text, seconds):
    # squeue's %L formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
    assert parse_slurm_duration(text) == seconds


def test_unknown_duration_is_refused():
    with pytest.raises(ValueError, match="unrecognised SLURM duration"):
        parse_slurm_duration("soon")


@pytest.mark.parametrize("squeue_prints, seconds", [("1:30", 90.0), ("INVALID", 0.0), ("UNLIMITED", None)])
def test_time_left_from_squeue(tmp_path, monkeypatch, squeue_prints, seconds):
    """squeue -o %L prints INVALID for a job past its limit (in SLURM's grace time): no time left."""
    squeue = tmp_path / "squeue"
    squeue.write_text(f"#!/bin/sh\necho {squeue_prints}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert slurm_seconds_left() == seconds


def test_stops_when_the_next_step_and_a_save_no_longer_fit():
    deadline = Deadline(time.monotonic() + SAFETY_SECONDS + 10)
    assert not deadline.must_stop(5)
    assert deadline.must_stop(15)
    assert not Deadline(None).must_stop(1e9)


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.setenv("CORAL_TIME_BUDGET", "100")
    deadline = Deadline.for_this_job()
    assert 99 < deadline.end - time.monotonic() <= 100


def test_first_signal_asks_to_stop_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGUSR1)
    with Deadline(None) as deadline:
        assert not deadline.must_stop(0)
        os.kill(os.getpid(), signal.SIGUSR1)
        assert deadline.signalled == signal.SIGUSR1 and deadline.must_stop(0)
    assert signal.getsignal(signal.SIGUSR1) is before
