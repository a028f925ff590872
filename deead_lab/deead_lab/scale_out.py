"""Run one job over many bags: serially, or as Ray actors, locally or on an existing Ray cluster.

A fleet's bags are hundreds of hours; one bag is the unit of work. A job is a small picklable value
with two methods (see `BagJob`):

    setup()            -> context   load the engines once per worker (e.g. make_engine + Runner)
    run(context, bag)  -> result    one bag; the result must be picklable (numpy arrays, dicts, dataclasses)

`run_bags(job, bags, workers=1)` runs them in this process, one after the other; `workers=N` starts
N Ray actors (one CPU each, `ray.init(num_cpus=N)` on this machine, or `ray_address` to join a
cluster), each of which calls `setup()` once and then takes bags one at a time until none is left
(a bag goes to whichever worker is free first). Both paths run the very same `_Worker` code, so a
deterministic job gives identical results (a test checks it). Results come back in input order.

A bag that fails is reported with its error (`BagOutcome.error`, "<Type>: <message>") and the others
complete; a worker process that dies is replaced and its bag reported as failed. Progress goes to
stderr, one line per finished bag.

On a cluster: the driver (this process) reads nothing but the bag paths; each actor reads its bags
from a path it must see (a shared file system or the same layout on every node), and the package
must be installed on every node (or passed in a Ray runtime_env). The engines load once per actor,
so a node with C cores runs C actors of one thread each (onnxruntime) or one actor per GPU.
"""
from __future__ import annotations

import glob
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from deead_ros.errors import DeeadError


class BagJob(Protocol):
    """The work done on each bag; a picklable value (a frozen dataclass of settings)."""

    def setup(self) -> Any:
        """Load what every bag needs (the engines), once per worker."""
        ...

    def run(self, context: Any, bag: Path) -> Any:
        """Process one bag with the worker's context; raise to report the bag as failed."""
        ...


@dataclass(frozen=True, slots=True)
class BagOutcome:
    """One bag's result, or why there is none."""

    bag: str
    result: Any = None        # the job's return value; None when error
    error: str = ""           # "" on success, else "<ExceptionType>: <message>"
    seconds: float = 0.0      # time in job.run for this bag (setup excluded)
    worker: str = ""          # host:pid of the process that ran it

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True, slots=True)
class BagRun:
    """Every bag's outcome (input order) and where the time went."""

    outcomes: tuple[BagOutcome, ...]
    workers: int              # processes that ran bags (1: serial, in this process)
    mode: str                 # serial | ray-local | ray-cluster
    wall_s: float             # from the call to the last result, start-up included
    startup_s: float = 0.0    # ray.init (0 when serial, or when Ray was already initialised)
    setup_s: float = 0.0      # until every worker had loaded its engines (after startup_s)
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if not o.ok]


class ScaleOutError(DeeadError):
    """The bags cannot be scheduled at all (no bag matched, Ray missing or unreachable)."""


def expand_bags(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Bag paths from paths and glob patterns, in the order given (each pattern's matches sorted), no duplicates.

    A plain path is kept even when it does not exist (its run then reports that bag's error); a glob
    pattern that matches nothing raises ScaleOutError naming it.
    """
    bags: list[Path] = []
    for pattern in patterns:
        text = os.fspath(pattern)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text))
            if not matches:
                raise ScaleOutError(f"no bag matches '{text}'; check the pattern (quote it so the shell leaves it "
                                    "to deead_ros) and the folder")
            bags.extend(Path(m) for m in matches)
        else:
            bags.append(Path(text))
    return list(dict.fromkeys(bags))


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class _Worker:
    """Holds one job and its context; the same class runs in-process (serial) and as a Ray actor."""

    def __init__(self, job: BagJob) -> None:
        self._job = job
        self._context: Any = None
        self._setup_error = ""
        self._ready = False
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def ready(self) -> str:
        """Load the engines now (once); return "" or the set-up error that every bag of this worker will report."""
        if not self._ready:
            try:
                self._context = self._job.setup()
            except Exception as err:     # noqa: BLE001 -- reported for every bag rather than lost in a worker log
                self._setup_error = f"set-up failed: {_describe(err)}"
            self._ready = True
        return self._setup_error

    def run(self, bag: str) -> BagOutcome:
        """Run the job on one bag; never raises: a failure comes back as the outcome's error."""
        setup_error = self.ready()
        if setup_error:
            return BagOutcome(bag, error=setup_error, worker=self.name)
        start = time.perf_counter()
        try:
            result = self._job.run(self._context, Path(bag))
        except Exception as err:         # noqa: BLE001 -- one bag's failure must not stop the others (reported)
            return BagOutcome(bag, error=_describe(err), seconds=time.perf_counter() - start, worker=self.name)
        return BagOutcome(bag, result, seconds=time.perf_counter() - start, worker=self.name)


ProgressFn = Callable[[int, int, BagOutcome], None]


def print_progress(done: int, total: int, outcome: BagOutcome) -> None:
    """One stderr line per finished bag."""
    status = f"ok in {outcome.seconds:.1f} s" if outcome.ok else f"FAILED: {outcome.error}"
    print(f"[scale_out] {done}/{total} {outcome.bag}: {status} ({outcome.worker})", file=sys.stderr, flush=True)


def run_bags(job: BagJob, bags: Sequence[str | os.PathLike[str]], *, workers: int = 1, ray_address: str = "",
             progress: ProgressFn | None = print_progress) -> BagRun:
    """Run `job` on every bag; serially when workers == 1 and no ray_address, else as Ray actors.

    Args:
        job: picklable; setup() runs once per worker, run() once per bag.
        bags: paths (already expanded: see expand_bags).
        workers: actors to start (Ray), or 1 for this process. On a cluster, the number of actors.
        ray_address: "" for a local Ray instance of `workers` CPUs; "auto" or "ray://host:10001" (or
            host:port) to join an existing cluster.
        progress: called after each bag (None: quiet).
    Returns:
        BagRun with one outcome per bag, in the order of `bags`.
    Raises:
        ScaleOutError: workers < 1, Ray not installed or the cluster not reachable.
    """
    names = [os.fspath(b) for b in bags]
    if workers < 1:
        raise ScaleOutError(f"--workers {workers}: needs at least 1 (1 runs the bags in this process)")
    if workers == 1 and not ray_address:
        return _run_serial(job, names, progress)
    return _run_ray(job, names, workers, ray_address, progress)


def _run_serial(job: BagJob, bags: list[str], progress: ProgressFn | None) -> BagRun:
    start = time.perf_counter()
    worker = _Worker(job)
    worker.ready()
    setup_s = time.perf_counter() - start
    outcomes = []
    for bag in bags:
        outcomes.append(worker.run(bag))
        if progress:
            progress(len(outcomes), len(bags), outcomes[-1])
    return BagRun(tuple(outcomes), 1, "serial", time.perf_counter() - start, 0.0, setup_s)


def _run_ray(job: BagJob, bags: list[str], workers: int, address: str, progress: ProgressFn | None) -> BagRun:
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError as err:
        raise ScaleOutError("--workers > 1 and --ray-address need Ray: `pip install ray==2.60.0` (in "
                            "requirements-lab.txt; `make setup` installs it), or run with --workers 1") from err
    start = time.perf_counter()
    owns = not ray.is_initialized()
    if owns:
        try:
            if address:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
            else:
                ray.init(num_cpus=workers, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ScaleOutError(f"cannot start or join Ray (address '{address or 'local'}'): {err}; check "
                                "`ray status` on the head node, or drop --ray-address to run locally") from err
    startup_s = time.perf_counter() - start
    actor_class = ray.remote(num_cpus=1, max_restarts=0)(_Worker)
    actors: list[Any] = []
    try:
        actors = [actor_class.remote(job) for _ in range(min(workers, len(bags)) or 1)]
        ray.get([a.ready.remote() for a in actors])          # engines loaded once per actor
        setup_s = time.perf_counter() - start - startup_s
        outcomes: dict[int, BagOutcome] = {}
        pending: dict[Any, tuple[int, int]] = {}              # object ref -> (bag index, actor index)
        queue = list(range(len(bags)))

        def submit(actor_index: int) -> None:
            if queue:
                index = queue.pop(0)
                pending[actors[actor_index].run.remote(bags[index])] = (index, actor_index)

        for actor_index in range(len(actors)):
            submit(actor_index)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            index, actor_index = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except RayActorError as err:       # the worker process died on this bag: report it, start another
                first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                outcome = BagOutcome(bags[index], error=f"worker died: {first_line}")
                actors[actor_index] = actor_class.remote(job)
            outcomes[index] = outcome
            if progress:
                progress(len(outcomes), len(bags), outcome)
            submit(actor_index)
        mode = "ray-cluster" if address else "ray-local"
        return BagRun(tuple(outcomes[i] for i in range(len(bags))), len(actors), mode,
                      time.perf_counter() - start, startup_s, setup_s)
    finally:
        for actor in actors:
            ray.kill(actor)
        if owns:
            ray.shutdown()


def compare_serial_and_ray(job: BagJob, bags: Sequence[str | os.PathLike[str]], workers: int = 2,
                           same: Callable[[Any, Any], bool] | None = None) -> tuple[dict, BagRun]:
    """Run the same bags serially and on `workers` local Ray actors, back to back; return the timings.

    Returns (timings, the Ray run). The timings: serial_s, ray_s (wall, start-up included), ray_startup_s
    (ray.init), ray_setup_s (actors loading their engines), speedup (serial_s / ray_s), speedup_after_startup
    (serial_s / (ray_s - startup - setup) with the serial engine load also taken out), identical (every bag's
    result equal, by `same`), and load_average (the machine's 5-minute load average at the end: on a shared
    machine, the other jobs' share).
    """
    serial = run_bags(job, bags, workers=1, progress=None)
    parallel = run_bags(job, bags, workers=workers, progress=None)
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else float("nan")    # 5-minute: other jobs' share
    same = same or (lambda a, b: a == b)
    identical = all(a.ok == b.ok and (not a.ok or same(a.result, b.result))
                    for a, b in zip(serial.outcomes, parallel.outcomes))
    serial_work = serial.wall_s - serial.setup_s
    ray_work = parallel.wall_s - parallel.startup_s - parallel.setup_s
    return {"bags": len(serial.outcomes), "workers": parallel.workers, "serial_s": round(serial.wall_s, 2),
            "serial_setup_s": round(serial.setup_s, 2), "ray_s": round(parallel.wall_s, 2),
            "ray_startup_s": round(parallel.startup_s, 2), "ray_setup_s": round(parallel.setup_s, 2),
            "speedup": round(serial.wall_s / parallel.wall_s, 2),
            "speedup_after_startup": round(serial_work / ray_work, 2) if ray_work > 0 else float("nan"),
            "identical": identical, "failed": [o.bag for o in serial.failed], "load_average": round(load, 1),
            # per-bag time in job.run: when Ray's is about workers x serial's, the workers shared one core
            "bag_s_serial": round(sum(o.seconds for o in serial.outcomes) / len(serial.outcomes), 2),
            "bag_s_ray": round(sum(o.seconds for o in parallel.outcomes) / len(parallel.outcomes), 2)}, parallel

