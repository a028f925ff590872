"""The simulator worker pool shared by the data collector and the closed loop: a finished episode,
one that raises, a worker that dies and one that spins are each that episode's result, and the pool
goes on with the next."""
from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from typing import Any

import pytest

from deead_lab import sim_workers
from deead_lab.sim_workers import ProcessWorkers, SimulatorFailure, StallWatch, SupervisedWorker

_state: dict = {}


def _remember(offset: int, watch: StallWatch) -> None:
    _state.update(offset=offset, watch=watch)


def _episode(job: tuple[str, Any]) -> tuple[int, int]:
    """What a worker does per job: 'ok' steps and returns, the others fail the ways a simulator does."""
    kind, value = job
    if kind == "raise":
        raise RuntimeError(f"simulator error {value}")
    if kind == "die":
        os._exit(3)                                     # a native crash: the process is gone
    if kind == "spin":
        while True:                                     # a renderer that never returns a frame
            pass
    for _ in range(3):
        _state["watch"].beat()
    return value + _state["offset"], os.getpid()


def _drain(workers: ProcessWorkers, count: int, timeout_s: float = 120.0) -> list:
    finished: list = []
    deadline = time.time() + timeout_s
    while len(finished) < count and time.time() < deadline:
        finished += workers.poll(1.0, episode_timeout_s=math.inf)
    return finished


def test_each_failure_is_that_episodes_result_and_the_pool_goes_on():
    workers = ProcessWorkers(1, _remember, (100,), _episode, tasks_per_worker=8, stall_s=1.0, wall_s=600.0)
    try:
        outcomes = []
        for job in [("ok", 1), ("raise", 2), ("die", 3), ("spin", 4), ("ok", 5)]:
            workers.submit(job, attempt=0)
            (running, result, error), = _drain(workers, 1)
            assert running.job == job and workers.free == 1
            outcomes.append((job[0], result[0] if result else None, error))
    finally:
        workers.close()
    assert outcomes[0] == ("ok", 101, "") and outcomes[4] == ("ok", 105, "")
    assert outcomes[1][1] is None and "RuntimeError: simulator error 2" in outcomes[1][2]
    assert outcomes[2][1:] == (None, "the worker process died")
    assert outcomes[3][1] is None and outcomes[3][2].startswith("hung: no simulated step while using 1 s of CPU")


def test_workers_are_recycled_without_losing_a_result():
    workers = ProcessWorkers(2, _remember, (0,), _episode, tasks_per_worker=1)
    finished: list = []
    try:
        for value in range(4):
            while not workers.free:
                finished += _drain(workers, 1)
            workers.submit(("ok", value), attempt=0)
        finished += _drain(workers, 4 - len(finished))
    finally:
        workers.close()
    assert all(error == "" for _running, _result, error in finished)
    assert sorted(result[0] for _running, result, _error in finished) == [0, 1, 2, 3], "every result, once"
    assert len({result[1] for _running, result, _error in finished}) == 4, "a new process for every episode"


def test_a_result_on_its_way_from_an_exited_worker_is_not_a_death():
    class Later:                                          # an AsyncResult that arrives during the grace
        def __init__(self) -> None:
            self.waited = 0.0

        def wait(self, timeout_s: float) -> None:
            self.waited = timeout_s

        def ready(self) -> bool:
            return self.waited > 0

    assert sim_workers._arrives(Later())


def test_a_multi_line_error_is_reported_on_one_line():
    workers = ProcessWorkers(1, _remember, (0,), _episode, tasks_per_worker=8)
    try:
        workers.submit(("raise", "first line\nsecond line"), attempt=0)
        (_running, result, error), = _drain(workers, 1)
    finally:
        workers.close()
    assert result is None and error == "RuntimeError: simulator error first line second line"


def test_a_supervised_worker_raises_what_went_wrong_and_serves_the_next_job():
    """What a Ray actor holds: the same supervision on the actor's own node."""
    worker = SupervisedWorker(_remember, (10,), _episode, tasks_per_worker=8, stall_s=1.0, wall_s=600.0)
    try:
        assert worker.run(("ok", 1))[0] == 11
        with pytest.raises(SimulatorFailure, match="hung: no simulated step while using 1 s of CPU"):
            worker.run(("spin", 0))
        with pytest.raises(SimulatorFailure, match="the worker process died"):
            worker.run(("die", 0))
        assert worker.run(("ok", 2))[0] == 12
    finally:
        worker.close()


def test_a_stall_is_no_step_while_the_worker_spins_not_a_slow_or_starved_one(monkeypatch):
    wall, cpu = [100.0], [5.0]
    monkeypatch.setattr(sim_workers.time, "monotonic", lambda: wall[0])
    monkeypatch.setattr(sim_workers, "cpu_seconds", lambda pid: cpu[0])
    watch = StallWatch(mp.get_context("spawn"), stall_s=60.0, wall_s=1000.0)
    watch.attach()                                       # (in the worker) the pid whose CPU time counts
    watch.restart()                                      # a job handed out
    for _ in range(10):                                  # a slow episode: a step every 50 s of CPU
        wall[0] += 50.0
        cpu[0] += 50.0
        watch.beat()
        assert not watch.stalled()
    wall[0] += 500.0                                     # starved by other jobs: 500 s, 10 s of CPU, no step
    cpu[0] += 10.0
    assert not watch.stalled(), "a starved worker is slow, not hung"
    cpu[0] += 51.0
    assert watch.stalled(), "61 s of CPU without a step: spinning, hung"
    watch.restart()
    assert not watch.stalled()
    wall[0] += 1001.0
    assert watch.stalled(), "no step for wall_s at all: hung without spinning"
    assert watch._pid.value == os.getpid()


def test_the_stall_watch_reads_this_process_cpu_time():
    watch = StallWatch(mp.get_context("spawn"))
    watch.attach()
    steps, pid, cpu, _wall = watch._now()
    assert steps == 0 and cpu is not None and cpu > 0.0


def test_a_job_is_lost_only_when_its_own_process_is_gone():
    watch = StallWatch(mp.get_context("spawn"))
    watch.attach()
    assert not watch.died(), "no job handed out yet"
    watch.job_started()
    assert not watch.died(), "this process is alive and still the worker"
    watch._pid.value = os.getpid() + 1                   # the pool started a replacement
    assert watch.died()
    watch.restart()
    assert not watch.died(), "a new job was handed out"

