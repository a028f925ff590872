"""Simulator episodes in worker processes, for the data collector and the closed loop alike.

MetaDrive 0.2.6's software renderer now and then spins on one frame for good (inside Panda3D's
getScreenshot), and a native crash takes its process with it. Each episode therefore runs in a worker
process that is replaced when it hangs, dies or raises; the caller gets the failure as that
episode's result and decides what to do (retry once, record it). Only the standard library and
/proc are used, so both the MetaDrive venv and the package's own can import this.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from deead_lab.proc_stats import cpu_seconds

STALL_S = 120.0                   # no simulated step while the worker burns this much CPU: hung (a reset ~15 s)
STALL_WALL_S = 3600.0             # ... or for this long at all: hung without spinning, or starved for an hour


class StallWatch:
    """Tells a hung simulator from a slow one, across processes: the worker calls `attach` once and
    `beat` after every simulated step; the supervisor asks `stalled` and restarts the watch when it
    hands out a job.

    Hung = no step while the worker used stall_s of CPU (read from /proc): a worker starved by other
    jobs on the machine uses little CPU and is left to finish; or no step for wall_s at all (a hang
    that blocks, or where /proc cannot be read). Pass it to the worker process as a Process or Pool
    argument (its counters are shared memory).
    """

    def __init__(self, ctx, stall_s: float = STALL_S, wall_s: float = STALL_WALL_S) -> None:
        self.stall_s, self.wall_s = stall_s, wall_s
        self._steps = ctx.Value("q", 0, lock=False)
        self._pid = ctx.Value("q", 0, lock=False)
        self._job_pid = ctx.Value("q", 0, lock=False)
        self._seen = self._now()

    def attach(self) -> None:
        """In the worker process: whose CPU time to watch."""
        self._pid.value = os.getpid()

    def job_started(self) -> None:
        """In the worker process: this process now drives the job handed out at the last restart."""
        self._job_pid.value = os.getpid()

    def died(self) -> bool:
        """True when the process that took the job is gone (a native crash): a pool starts a new worker
        in its place, which attaches, but the job is lost with the old one."""
        job_pid = self._job_pid.value
        if job_pid == 0:
            return False
        if job_pid != self._pid.value:
            return True
        try:
            os.kill(job_pid, 0)
        except OSError:                  # gone, or the pid already belongs to another user's process
            return True
        return False

    def beat(self, _step: int = 0) -> None:
        self._steps.value += 1

    def _now(self) -> tuple[int, int, float | None, float]:
        """(steps, worker pid, its CPU seconds or None, wall clock)."""
        pid = self._pid.value
        try:
            cpu = cpu_seconds(pid) if pid else None
        except (OSError, ValueError, IndexError):       # the worker is gone, or no /proc
            cpu = None
        return self._steps.value, pid, cpu, time.monotonic()

    def restart(self) -> None:
        """In the supervisor, when it hands out a job."""
        self._job_pid.value = 0
        self._seen = self._now()

    def stalled(self) -> bool:
        """True when no step was simulated since the last one seen (or the restart) while the worker used
        stall_s of CPU, or for wall_s."""
        now = self._now()
        steps, pid, cpu, wall = now
        if steps != self._seen[0] or pid != self._seen[1] or (cpu is None) != (self._seen[2] is None):
            self._seen = now                               # a step, a new worker, or /proc came or went
            return False
        spun = cpu is not None and self._seen[2] is not None and cpu - self._seen[2] > self.stall_s
        return spun or wall - self._seen[3] > self.wall_s

    def describe(self) -> str:
        """What `stalled` means, for the failure record."""
        return f"no simulated step while using {self.stall_s:.0f} s of CPU (or for {self.wall_s:.0f} s)"


def worker_count(text: str) -> int:
    """argparse type of a --workers option: a pool needs at least one worker."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: at least one worker is needed")
    return value


@dataclass
class Running:
    """An episode a worker is driving."""

    job: Any
    attempt: int
    started: float


Finished = tuple[Running, Any, str]          # the episode, its result (None on failure), what went wrong


_worker_watch: list[StallWatch] = []      # in a worker process: its watch, set by _start_worker


def _start_worker(initializer: Callable[..., None], initargs: tuple, watch: StallWatch) -> None:
    _worker_watch[:] = [watch]
    watch.attach()
    initializer(*initargs, watch)


def _drive(run: Callable[[Any], Any], job: Any) -> Any:
    _worker_watch[0].job_started()
    return run(job)


def _arrives(pending, wait_s: float = 1.0) -> bool:
    """Whether a result is still on its way from a worker that has exited (a worker also exits after its
    last task, when the pool recycles it)."""
    pending.wait(wait_s)
    return pending.ready()


class ProcessWorkers:
    """Episodes in `count` worker processes on this machine, one at a time each.

    Each worker runs `initializer(*initargs, watch)` once (open engines, remember settings; it hands
    `watch.beat` to the simulator as its per-step callback), then `run(job)` per episode; both must be
    importable module-level functions (the workers are spawned). A worker is replaced after
    `tasks_per_worker` episodes (bounds native memory growth) and after a failure, which becomes that
    episode's result: `run` raised (the engine may be half torn down), the process died, it hung
    (`StallWatch`: no simulated step while burning `stall_s` of CPU, so a long route or a worker
    starved by other jobs is not mistaken for one) or it passed the episode timeout, a backstop.
    """

    def __init__(self, count: int, initializer: Callable[..., None], initargs: tuple, run: Callable[[Any], Any],
                 tasks_per_worker: int, stall_s: float = STALL_S, wall_s: float = STALL_WALL_S) -> None:
        self._context = mp.get_context("spawn")
        self._watches = [StallWatch(self._context, stall_s, wall_s) for _ in range(count)]
        self._initializer, self._initargs, self._run = initializer, initargs, run
        self._tasks_per_worker = tasks_per_worker
        self._pools: list = [None] * count
        self._pending: dict[int, tuple] = {}               # slot -> (AsyncResult, Running)

    @property
    def free(self) -> int:
        return len(self._pools) - len(self._pending)

    def submit(self, job: Any, attempt: int) -> None:
        slot = next(i for i in range(len(self._pools)) if i not in self._pending)
        if self._pools[slot] is None:
            self._pools[slot] = self._context.Pool(
                1, initializer=_start_worker, initargs=(self._initializer, self._initargs, self._watches[slot]),
                maxtasksperchild=self._tasks_per_worker)
        self._watches[slot].restart()
        self._pending[slot] = (self._pools[slot].apply_async(_drive, (self._run, job)),
                               Running(job, attempt, time.time()))

    def poll(self, timeout_s: float, episode_timeout_s: float) -> list[Finished]:
        """Finished episodes (result, or None and what went wrong), waiting up to timeout_s for the first."""
        deadline = time.time() + timeout_s
        while True:
            done = []
            for slot, (pending, running) in list(self._pending.items()):
                watch = self._watches[slot]
                if pending.ready():
                    try:
                        done.append((running, pending.get(), ""))
                    except Exception as err:          # noqa: BLE001  any failure inside the simulator is this episode's
                        worker_traceback = getattr(err.__cause__, "tb", "")      # multiprocessing's RemoteTraceback
                        print(f"[workers] job {running.job} raised:\n{worker_traceback}", file=sys.stderr, flush=True)
                        done.append((running, None, " ".join(f"{type(err).__name__}: {err}".split())[:300]))
                        self._replace(slot)
                elif watch.died() and not _arrives(pending):
                    done.append((running, None, "the worker process died"))
                    self._replace(slot)
                elif watch.stalled():
                    done.append((running, None, f"hung: {watch.describe()}"))
                    self._replace(slot)
                elif time.time() - running.started > episode_timeout_s:
                    done.append((running, None, f"no result after {episode_timeout_s:.0f} s"))
                    self._replace(slot)
                else:
                    continue
                self._pending.pop(slot, None)
            if done or time.time() >= deadline:
                return done
            time.sleep(0.2)

    def _replace(self, slot: int) -> None:
        if self._pools[slot] is not None:
            self._pools[slot].terminate()
            self._pools[slot] = None

    def close(self) -> None:
        for slot in range(len(self._pools)):
            self._replace(slot)


class SimulatorFailure(RuntimeError):
    """An episode's worker process raised, died or hung; the message says which."""


class SupervisedWorker:
    """One worker process supervised where this object lives, for a Ray actor to wrap.

    On a cluster the driver cannot read a remote worker's /proc; an actor holding this object can, so
    a hung renderer or a native crash fails the episode on its own node as in a local pool, instead
    of at the driver's episode timeout. `run` returns the episode's result or raises SimulatorFailure.
    """

    def __init__(self, initializer: Callable[..., None], initargs: tuple, run: Callable[[Any], Any],
                 tasks_per_worker: int, stall_s: float = STALL_S, wall_s: float = STALL_WALL_S) -> None:
        self._workers = ProcessWorkers(1, initializer, initargs, run, tasks_per_worker, stall_s, wall_s)

    def run(self, job: Any) -> Any:
        self._workers.submit(job, attempt=0)
        finished: list[Finished] = []
        while not finished:                 # the driver's episode timeout is the backstop, not this loop's
            finished = self._workers.poll(1.0, episode_timeout_s=math.inf)
        (_running, result, error), = finished
        if result is None:
            raise SimulatorFailure(error)
        return result

    def close(self) -> None:
        self._workers.close()
