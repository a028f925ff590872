"""Scale-out over bags: serial and Ray give the same results, failures are reported, engines load once per worker."""
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from deead_lab.scale_out import BagOutcome, ScaleOutError, expand_bags, run_bags


@dataclass(frozen=True)
class ToyJob:
    """setup() stands for loading engines: a fresh token per load; run() says which load served the bag."""

    fail_on: str = "bad"
    die_on: str = "die"

    def setup(self) -> str:
        return uuid.uuid4().hex

    def run(self, context: str, bag: Path) -> tuple[str, int, str]:
        if bag.name == self.fail_on:
            raise ValueError(f"{bag}: missing /localization/odometry")
        if bag.name == self.die_on:
            os._exit(3)                                   # a worker process that crashes outright
        return bag.name, os.getpid(), context


def test_expand_bags_keeps_order_expands_globs_and_drops_duplicates(tmp_path):
    for name in ("b", "a", "c"):
        (tmp_path / f"drive_{name}").mkdir()
    pattern = str(tmp_path / "drive_*")
    bags = expand_bags([tmp_path / "drive_c", pattern, tmp_path / "not_there"])
    assert [b.name for b in bags] == ["drive_c", "drive_a", "drive_b", "not_there"]
    with pytest.raises(ScaleOutError, match=r"no bag matches '.*nothing_\*'"):
        expand_bags([str(tmp_path / "nothing_*")])


def test_serial_reports_a_failing_bag_and_completes_the_others():
    seen = []
    run = run_bags(ToyJob(), ["x/one", "x/bad", "x/two"], progress=lambda done, total, o: seen.append((done, total)))
    assert [o.ok for o in run.outcomes] == [True, False, True] and run.mode == "serial"
    assert run.outcomes[1].error == "ValueError: x/bad: missing /localization/odometry"
    assert len({o.result[2] for o in run.outcomes if o.ok}) == 1, "one engine load for all bags"
    assert seen == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(ScaleOutError, match="--workers 0"):
        run_bags(ToyJob(), ["x"], workers=0)


def test_a_failing_setup_is_reported_for_every_bag():
    @dataclass(frozen=True)
    class NoModel(ToyJob):
        def setup(self) -> str:
            raise FileNotFoundError("manifest.json: no such file; run make setup")
    run = run_bags(NoModel(), ["a", "b"], progress=None)
    assert [o.error for o in run.outcomes] == ["set-up failed: FileNotFoundError: manifest.json: no such file; "
                                               "run make setup"] * 2


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray instance (2 CPUs) for this module's tests: run_bags joins it rather than starting its own."""
    ray = pytest.importorskip("ray", reason="Ray is installed by `make setup` (requirements-lab.txt)")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning")
    yield ray
    ray.shutdown()


def test_ray_matches_serial_on_real_bags_and_reports_the_broken_one(ray_local, small_model, fixture_bag, tmp_path):
    from deead_ros.exit import ExitSettings
    from deead_lab.calibrate import RecordJob
    second = tmp_path / "second"
    shutil.copytree(fixture_bag, second)
    bags = [fixture_bag, tmp_path / "missing", second]
    job = RecordJob(str(small_model), exit_settings=ExitSettings(first_checkpoint=2), max_frames=12)
    serial = run_bags(job, bags, progress=None)
    parallel = run_bags(job, bags, workers=2, progress=None)
    assert parallel.mode == "ray-local" and parallel.workers == 2
    assert [o.bag for o in parallel.outcomes] == [str(b) for b in bags], "results come back in input order"
    assert [o.ok for o in serial.outcomes] == [o.ok for o in parallel.outcomes] == [True, False, True]
    for a, b in zip(serial.outcomes, parallel.outcomes):
        assert a.error == b.error
        assert a.result == b.result, f"{a.bag}: Ray's records differ from the serial run's"
    assert "missing: no such bag" in parallel.outcomes[1].error
    assert len(serial.outcomes[0].result) == 12
    assert len({o.worker for o in parallel.outcomes if o.ok}) >= 1
    assert ray_local.is_initialized(), "run_bags leaves a Ray instance it did not start running"


def test_ray_loads_engines_once_per_worker_and_survives_a_dead_worker(ray_local):
    bags = [f"bags/{i}" for i in range(6)] + ["bags/die", "bags/after"]
    run = run_bags(ToyJob(), bags, workers=2, progress=None)
    outcomes: list[BagOutcome] = list(run.outcomes)
    assert [o.bag for o in outcomes] == bags
    dead = outcomes[6]
    assert not dead.ok and dead.error.startswith("worker died"), dead
    assert all(o.ok for o in outcomes[:6] + outcomes[7:])
    loads_by_pid: dict[int, set[str]] = {}
    for o in outcomes:
        if o.ok:
            loads_by_pid.setdefault(o.result[1], set()).add(o.result[2])
    assert all(len(loads) == 1 for loads in loads_by_pid.values()), loads_by_pid
    assert os.getpid() not in loads_by_pid, "the bags ran in Ray workers, not in the test process"
