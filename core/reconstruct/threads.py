"""CPU threads that share the machine: as many intra-op threads as there are cores nobody else uses.

Why: torch's parallel regions end at a barrier where OpenMP threads spin, so with one thread per
core a single busy process on one core slows every region to the pace of the thread that shares
that core (measured: 3× the idle time with one competitor on 2 cores, 20× under heavy load). The
:class:`ThreadGovernor` reads how much CPU *other* processes used since its last look
(``/proc/stat`` minus this process's own CPU time) and sets ``torch.set_num_threads`` to the cores
left free (at least 1), before each window. One thread has no barrier to spin at.

``bench/bench_speed.py`` measured the alternatives next to one busy process: OpenMP's passive
waiting (``OMP_WAIT_POLICY=PASSIVE``) also keeps the busy run close to the idle one, but makes the
idle run ~1.5× slower (threads sleep between the decoder's many short regions), and ``nice`` only
slows this run down; so the default is the governor with OpenMP's own waiting.

Policies: ``auto`` (the governor), ``all`` (every available core, torch's default), or a number.
"""
from __future__ import annotations

import os
import resource
import time

import torch


def available_cores() -> int:
    """Cores this process may run on (affinity mask, e.g. under taskset or a cgroup)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _busy_and_total_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    values = [int(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ThreadGovernor:
    """Keeps ``torch.get_num_threads()`` at the number of cores other processes leave free."""

    def __init__(self, policy: str | int = "auto", reserve: int = 0, min_interval: float = 0.2) -> None:
        """``reserve``: cores left alone in any case (the QGIS plugin keeps one for the desktop)."""
        self.policy = policy
        self.cores = max(1, available_cores() - max(0, int(reserve)))
        self.min_interval = min_interval
        self.history: list[int] = []
        self._initial = torch.get_num_threads()
        # Nothing is changed before the first update (called per window, inside the run that
        # restores the initial count): an error before the first window leaves torch as it was.
        self._last: tuple[float, tuple[int, int] | None, float] | None = (
            (time.monotonic(), _busy_and_total_ticks(), _own_cpu_seconds()) if policy == "auto" else None)

    def update(self) -> int:
        """Re-read the machine's load (auto policy) and set the thread count; returns it."""
        if self.policy != "auto":
            fixed = self.cores if self.policy == "all" else max(1, int(self.policy))
            if torch.get_num_threads() != fixed:
                torch.set_num_threads(fixed)
            return fixed
        if self._last is None:
            return torch.get_num_threads()
        now = time.monotonic()
        t0, ticks0, own0 = self._last
        if now - t0 < self.min_interval:
            return torch.get_num_threads()
        ticks1, own1 = _busy_and_total_ticks(), _own_cpu_seconds()
        self._last = (now, ticks1, own1)
        if ticks0 is None or ticks1 is None or ticks1[1] <= ticks0[1]:
            return torch.get_num_threads()
        machine_cores = max(1, os.cpu_count() or 1)
        busy_fraction = (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1])
        busy_cores = busy_fraction * machine_cores  # everyone, this process included
        own_cores = (own1 - own0) / (now - t0)
        others = max(0.0, busy_cores - own_cores)
        threads = max(1, min(self.cores, int(round(self.cores - others))))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.history.append(threads)
        return threads

    def restore(self) -> None:
        """Give torch back the thread count it had before (a library caller's setting)."""
        torch.set_num_threads(self._initial)


def configure_threads(policy: str | int = "auto", reserve: int = 0) -> ThreadGovernor:
    """A governor for ``policy``; a fixed policy's thread count is set at once (see the module
    docstring), ``auto`` sets it from its first measurement on."""
    governor = ThreadGovernor(policy, reserve)
    governor.update()
    return governor
