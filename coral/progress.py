"""Progress bars for long stages: the bar goes to stderr (a rule's log file inside a Snakemake job) and,
when stderr is such a log, one status line per CONSOLE_EVERY seconds (and one at the end of a bar that
ran that long) goes to the console as well, e.g.

    train results/runs/animals-rho0.01/ddpm/seed0: 750/1500 (50%), loss=0.0412, img/s=512, 1.9 it/s, ETA 06:30

so the workflow's console shows each running job's progress without the bar's redraws."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

CONSOLE_EVERY = 30.0  # seconds between a job's console lines


class Progress(tqdm):
    """tqdm on stderr that also reports to the console (sys.__stderr__) when stderr was redirected.

    console_every: seconds between console lines (the first comes after that long, the last at close;
    a bar closed sooner says nothing on the console).
    """

    def __init__(self, *args, console_every: float = CONSOLE_EVERY, mininterval: float = 5, **kwargs):
        self._console = sys.__stderr__ if sys.stderr is not sys.__stderr__ else None
        self._console_every = console_every
        self._console_last = time.monotonic()
        self._console_n = None  # the count of the last console line
        kwargs.setdefault("file", sys.stderr)
        super().__init__(*args, mininterval=mininterval, **kwargs)

    def update(self, n: float | None = 1):
        displayed = super().update(n)
        if self._console is not None and time.monotonic() - self._console_last >= self._console_every:
            self._to_console()
        return displayed

    def close(self):
        long = self._console_n is not None or self.format_dict["elapsed"] >= self._console_every
        if self._console is not None and not self.disable and self.n and self.n != self._console_n and long:
            self._to_console()  # the end of a job that ran long enough to report
            self._console = None  # a second close says nothing
        super().close()

    def status(self) -> str:
        """`desc: n/total (pct), postfix, rate, ETA` from the bar's own counters."""
        info = self.format_dict
        n, total, elapsed = info["n"], info["total"], info["elapsed"]
        done_here = n - info.get("initial", 0)
        rate = info["rate"] or (done_here / elapsed if elapsed > 0 and done_here > 0 else None)
        parts = [f"{n}/{total} ({100 * n / total:.0f}%)" if total else f"{n}"]
        if info.get("postfix"):
            parts.append(info["postfix"])
        if rate:
            parts.append(f"{rate:.3g} {info['unit']}/s")
            if total and n < total:
                parts.append(f"ETA {self.format_interval((total - n) / rate)}")
            else:
                parts.append(f"took {self.format_interval(elapsed)}")
        return f"{info['prefix']}: " + ", ".join(parts)

    def _to_console(self) -> None:
        print(self.status(), file=self._console, flush=True)
        self._console_last, self._console_n = time.monotonic(), self.n
