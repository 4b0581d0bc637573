"""The console status lines of a job's progress bar (coral.progress), on a hand-driven clock."""
import io
import sys

from coral.progress import Progress


def _bar(monkeypatch, redirected: bool, **kwargs):
    console, log = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", console)
    monkeypatch.setattr(sys, "stderr", log if redirected else console)
    clock = [0.0]
    bar = Progress(total=10, desc="train run", unit="step", smoothing=0, mininterval=0, console_every=0, **kwargs)
    bar._time = lambda: clock[0]
    bar.start_t = bar.last_print_t = 0.0
    return bar, clock, console, log


def test_a_job_with_a_log_reports_step_rate_and_eta_on_the_console(monkeypatch):
    bar, clock, console, log = _bar(monkeypatch, redirected=True)
    clock[0] = 2.0
    bar.set_postfix(loss="0.5", refresh=False)
    bar.update(4)  # 4 steps in 2 s: 2 steps/s, 6 left -> 3 s
    clock[0] = 5.0
    bar.update(6)  # 10 steps in 5 s
    bar.close()
    lines = console.getvalue().splitlines()
    assert lines == ["train run: 4/10 (40%), loss=0.5, 2 step/s, ETA 00:03",
                     "train run: 10/10 (100%), loss=0.5, 2 step/s, took 00:05"]
    assert "4/10" in log.getvalue()  # the bar itself stays in the log


def test_a_resumed_job_counts_its_rate_from_its_own_steps(monkeypatch):
    bar, clock, console, _ = _bar(monkeypatch, redirected=True, initial=6)
    clock[0] = 4.0
    bar.update(2)  # 2 steps of this job in 4 s: 0.5 steps/s, 2 left -> 4 s
    bar.close()
    assert console.getvalue().splitlines()[0] == "train run: 8/10 (80%), 0.5 step/s, ETA 00:04"


def test_on_the_console_itself_only_the_bar_is_drawn(monkeypatch):
    bar, clock, console, _ = _bar(monkeypatch, redirected=False)
    clock[0] = 1.0
    bar.update(10)
    bar.close()
    assert "took" not in console.getvalue() and "10/10" in console.getvalue()


def test_a_short_job_says_nothing_on_the_console(monkeypatch):
    bar, clock, console, _ = _bar(monkeypatch, redirected=True)
    bar._console_every = 30.0
    clock[0] = 29.0
    bar.update(10)
    bar.close()
    assert console.getvalue() == ""
