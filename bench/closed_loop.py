"""Closed-loop safety in MetaDrive: the model drives held-out maps at full depth and with early exit.

The protocol (declared before the run) is docs/closed_loop_protocol.md. Runs in the MetaDrive venv
(`make metadrive`); --workers N episodes at once, each in its own simulator: worker processes on this
machine, or Ray actors (--ray locally, --ray-address on a cluster). Resumable: every finished episode is one line
of <out>/episodes[_density_D].jsonl, tagged with the protocol and expert versions, the traffic density
and the sha256 of the weights that drove it (a new model starts over, the expert's episodes are kept), and
is never run again. Jobs go seed by seed, every setting on a seed before the next seed, from seed
3000 on, until --seeds seeds have a driving outcome in every setting. A seed whose spawn is not
clear is recorded as `spawn_blocked` for every setting and replaced by the next one; an episode
the simulator crashes or hangs on (sim_workers: no step while burning CPU) is retried once, then
the seed is recorded as `sim_failure` for every setting (counted in the report, not scored).

    make closed-loop                                          # 200 seeds x 10 settings (days here)
    .venv-metadrive/bin/python bench/closed_loop.py --workers 8 --ray-address auto   # on a Ray cluster
    nohup nice -n 10 .venv-metadrive/bin/python bench/closed_loop.py --seeds 200 > runs/closed_loop/run.log 2>&1 &
    .venv-metadrive/bin/python bench/closed_loop.py --settings expert --seeds 30   # the expert alone
    .venv-metadrive/bin/python bench/closed_loop.py --density 0.2                   # the dense split (30 seeds)
    .venv-metadrive/bin/python bench/closed_loop.py --report-only                   # the report from what exists
    .venv-metadrive/bin/python bench/closed_loop.py --trace 3001 full               # one episode, step by step

Settings: the yielding IDM expert (the data set's driver), the model at full depth, deead at
delta 0.5 / 1 / 2 m and the recommended delta (exit.delta_m), fixed exits at --fixed-layers (deead's
mean exit layer at 2 m and at the recommended delta), patience, and deead-or-patience at 2 m. The dense
split (--density 0.2): the expert, full depth, deead at the recommended delta and the fixed exit at its
depth, on 30 seeds.

Writes <docs>/closed_loop.json (closed_loop_density_D.json for another density) and .png: per
setting the rates with 95% intervals, per early-exit setting the paired comparison with full depth
(McNemar; Newcombe's paired interval for rates, a seed bootstrap for completion and score) and the
verdict against the declared margins; <out>/progress.json after every seed. Ends with one JSON
line: seeds, the expert's rates, verdicts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deead_ros"))    # measure this checkout
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "deead_lab"))    # and its lab package

from deead_ros.engines.manifest import load_manifest
from deead_ros.exit.settings import matched_fixed_setting, setting_name
from deead_ros.parameters import default
from deead_lab.closed_loop import (
    CONFIRMATION_FIRST_SEED,
    CONFIRMATION_PROTOCOL,
    CONFIRMATION_SETTINGS,
    DENSE_SPLIT_SEEDS,
    EXPERT,
    FULL,
    PROTOCOL_SEEDS,
    PROTOCOL_VERSION,
    SIM_ERROR,
    SIM_FAILURE,
    confirmation_headline,
    failed,
    fill_not_scored,
    is_main_split,
    max_checks_of,
    next_job,
    report_name,
    scored_seeds,
    split_file_name,
    split_seeds,
    summarise,
)
from deead_lab.driving.loop import drive_job, init_episode_worker
from deead_lab.sim.scenario import TRAFFIC_DENSITY
from deead_lab.sim.traffic import EXPERT_VERSION
from deead_lab.sim_workers import ProcessWorkers, Running, SimulatorFailure, SupervisedWorker, worker_count

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".venv" / "share" / "deead_ros" / "models" / "demo" / "onnx" / "manifest.json"
BENCH_EXIT_JSON = REPO / "docs" / "bench_exit.json"   # the committed open-loop benchmark: the fixed exit's layer
EPISODES_PER_WORKER = 8        # a worker process is replaced after this many episodes (native memory growth)
HELD_OUT_SEEDS = 3000          # maps never used for training (0-109), validation (1000-1009) or test (2000-2013)


def model_sha256(manifest) -> str:
    """The trained weights' sha256 when the export copied them, else a digest of the graphs the chain runs."""
    weights = next((f for f in manifest.extra if f.role == "weights"), None)
    if weights is not None:
        return weights.sha256
    return hashlib.sha256("".join(f.sha256 for f in manifest.engine_files).encode()).hexdigest()


def driver(setting: str, model_id: str) -> str:
    """Who drove an episode: the expert (the same for every model) or the model with these weights."""
    return EXPERT if setting == EXPERT else model_id


def matched_fixed(bench_exit_json: Path, model_version: str, delta_m: float) -> str | None:
    """The fixed exit at deead's mean depth at delta_m in bench_exit on this model (matched compute, the paper's
    Fixed-EE), or None when bench_exit.json is missing, measured another model or not that delta."""
    try:
        measured = json.loads(bench_exit_json.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    deead = measured.get("settings", {}).get(setting_name("deead", delta_m))
    if measured.get("model_version") != model_version or deead is None:
        return None
    return matched_fixed_setting(deead["mean_exit_layer"])


def dense_split_settings(fixed_at_recommended: str | None, recommended_delta_m: float) -> list[str]:
    """The dense split's settings (declared in the protocol): the recommended delta against full depth and
    against the fixed exit at its depth, beside the expert."""
    return [EXPERT, FULL, setting_name("deead", recommended_delta_m),
            *([fixed_at_recommended] if fixed_at_recommended else [])]


def settings(fixed: list[str], recommended_delta_m: float) -> list[str]:
    """The protocol's settings, and deead at the recommended delta (exit.delta_m) where it is not one of them;
    the fixed exits `fixed` (at deead 2 m's mean depth, then at the recommended delta's)."""
    deltas = [setting_name("deead", d) for d in sorted({recommended_delta_m, 0.5, 1.0, 2.0})]
    return [EXPERT, FULL, *deltas, *dict.fromkeys(fixed), "patience", setting_name("deead_or_patience", 2.0)]


Job = tuple[int, str, float, int | None]        # seed, setting, density, step cap


class RayWorkers:
    """Episodes as Ray actors, one simulator each, locally (`ray.init(num_cpus=N)`) or on a cluster.

    Each actor supervises one worker process on its own node (`sim_workers.SupervisedWorker`, running
    the same `init_episode_worker` / `drive_job` as a local worker), so a hung renderer or a native
    crash fails the episode there within `sim_workers.STALL_S` of CPU; an actor that dies or passes the
    episode timeout (a backstop) is killed and replaced. Either way the supervisor records the attempt.
    On a cluster every node needs this checkout and the MetaDrive venv at the same path (or a runtime_env).
    """

    def __init__(self, count: int, model: str, first_checkpoint: int, max_checks: int, address: str) -> None:
        import ray
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address or None, num_cpus=None if address else count, include_dashboard=False,
                     log_to_driver=False,
                     runtime_env={"env_vars": {"PYTHONPATH": f"{REPO / 'deead_ros'}:{REPO / 'deead_lab'}"}})
        self._actor_class = ray.remote(num_cpus=1, max_restarts=0)(SupervisedWorker)
        self._init = (init_episode_worker, (model, first_checkpoint, max_checks), drive_job, EPISODES_PER_WORKER)
        self._actors = [self._actor_class.remote(*self._init) for _ in range(count)]
        self._pending: dict = {}                           # ObjectRef -> (actor index, Running)

    @property
    def free(self) -> int:
        return len(self._actors) - len(self._pending)

    def submit(self, job: Job, attempt: int) -> None:
        busy = {index for index, _ in self._pending.values()}
        index = next(i for i in range(len(self._actors)) if i not in busy)
        self._pending[self._actors[index].run.remote(job)] = (index, Running(job, attempt, time.time()))

    def poll(self, timeout_s: float, episode_timeout_s: float) -> list[tuple[Running, dict | None, str]]:
        done = []
        if self._pending:
            ready, _ = self._ray.wait(list(self._pending), num_returns=1, timeout=timeout_s)
            for ref in ready:
                index, running = self._pending.pop(ref)
                try:
                    done.append((running, self._ray.get(ref), ""))
                except Exception as err:              # noqa: BLE001  the actor died or the episode failed
                    cause = getattr(err, "cause", None)   # a RayTaskError carries the actor's exception
                    note = str(cause) if isinstance(cause, SimulatorFailure) else f"{type(err).__name__}: {err}"
                    done.append((running, None, " ".join(note.split())[:300]))
                    self._replace(index)
        for ref, (index, running) in list(self._pending.items()):
            if time.time() - running.started > episode_timeout_s:
                self._pending.pop(ref)
                done.append((running, None, f"no result after {episode_timeout_s:.0f} s"))
                self._replace(index)
        return done

    def _replace(self, index: int) -> None:
        self._ray.kill(self._actors[index])
        self._actors[index] = self._actor_class.remote(*self._init)

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)


def log_path(out: Path, density: float) -> Path:
    return out / split_file_name("episodes", density, ".jsonl")


def load_records(log: Path, model_id: str, density: float, max_steps: int | None,
                 protocol: int = PROTOCOL_VERSION) -> list[dict]:
    """This protocol's, density's, cap's and model's records (the expert's whatever the model)."""
    if not log.exists():
        return []
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:            # a line half written when a run was killed: that episode reruns
            print(f"[closed_loop] {log}:{i + 1}: not a whole record, ignored", file=sys.stderr)
    return [r for r in records if r.get("protocol") == protocol and r.get("expert_version") == EXPERT_VERSION
            and r.get("density") == density
            and r.get("cap_override") == max_steps and r.get("model") in (driver(r["setting"], model_id), "all")]


def _jsonable(value):
    """NaN -> None, recursively (strict JSON for the docs)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def make_workers(args: argparse.Namespace) -> ProcessWorkers | RayWorkers:
    max_checks = max_checks_of(args.protocol)
    if args.ray_address or args.ray:
        return RayWorkers(args.workers, args.model, args.first_checkpoint, max_checks, args.ray_address)
    return ProcessWorkers(args.workers, init_episode_worker, (args.model, args.first_checkpoint, max_checks),
                          drive_job, tasks_per_worker=EPISODES_PER_WORKER)


def run(args: argparse.Namespace, chosen: list[str], model_id: str, log: Path) -> list[dict]:
    """Drive seeds from --first-seed until --seeds of them are scored in every setting; returns all records.

    Every worker takes the next job in seed order (every setting of a seed before the next seed); a seed
    is opened only while the open ones could still fall short of the target, so a run with N workers
    drives the same seeds as a serial one.
    """
    records = load_records(log, model_id, args.density, args.max_steps, args.protocol)
    workers = make_workers(args)
    start, episodes_run = time.time(), 0
    tag = {"protocol": args.protocol, "expert_version": EXPERT_VERSION, "density": args.density,
           "cap_override": args.max_steps, "render_seeded": True,     # collect_metadrive.make_env seeds the renderer
           "max_checks": max_checks_of(args.protocol)}
    shuffle = args.protocol == CONFIRMATION_PROTOCOL
    running: set[tuple[int, str]] = set()               # (seed, setting) a worker is driving
    open_seeds: list[int] = []
    driven: set[int] = set()                             # seeds this run drove an episode on
    next_seed = args.first_seed

    def write(record: dict, sink) -> None:
        record.update(tag)
        record.setdefault("model", driver(record["setting"], model_id))
        sink.write(json.dumps(record) + "\n")
        sink.flush()
        records.append(record)

    def next_start() -> tuple[int, str, int] | None:
        nonlocal next_seed
        while True:
            for seed in open_seeds:
                if (job := next_job(records, seed, chosen, running, shuffle)) is not None:
                    return seed, *job
            unfinished = [s for s in open_seeds
                          if any(seed == s for seed, _ in running) or next_job(records, s, chosen) is not None]
            if len(scored_seeds(records, chosen)) + len(unfinished) >= args.seeds:
                return None
            open_seeds.append(next_seed)
            next_seed += 1

    print(f"[closed_loop] protocol {args.protocol}, density {args.density}, {len(records)} records in {log}; "
          f"target {args.seeds} scored seeds x {len(chosen)} settings, {args.workers} at once "
          f"({'Ray actors' if isinstance(workers, RayWorkers) else 'worker processes'})", flush=True)
    try:
        if log.exists() and log.stat().st_size and not log.read_bytes().endswith(b"\n"):
            with log.open("a") as sink:                 # end a line cut short by a kill before appending
                sink.write("\n")
        with log.open("a") as sink:
            while True:
                while workers.free and (start_job := next_start()) is not None:
                    seed, setting, attempt = start_job
                    job = (seed, setting, args.density, args.max_steps)
                    workers.submit(job, attempt)
                    running.add((seed, setting))
                    driven.add(seed)
                if not running:
                    break
                for done, record, error in workers.poll(1.0, args.episode_timeout_s):
                    seed, setting = done.job[0], done.job[1]
                    running.discard((seed, setting))
                    if record is None:
                        reason = SIM_ERROR if done.attempt == 1 else SIM_FAILURE
                        record = failed(seed, setting, reason, time.time() - done.started, note=error)
                        print(f"[closed_loop] seed {seed} {setting}: attempt {done.attempt} failed ({error}) -> "
                              f"{reason}", flush=True)
                    write(record, sink)
                    episodes_run += 1
                    rate = episodes_run / max(time.time() - start, 1e-6) * 3600
                    print(f"[closed_loop] seed {seed} {setting:>20}: {record['end_reason']:>13} after "
                          f"{record['steps']:4d}/{record['max_steps']:4d} steps, "
                          f"completion {record['completion']:.2f}, "
                          f"fault {record['fault_reason'] or '-':>12}, exit {record['mean_exit_layer']:.1f}, "
                          f"{record['wall_s']:.0f} s | {rate:.1f} episodes/h", flush=True)
                for seed in list(open_seeds):            # seeds with nothing left to drive or running
                    if next_job(records, seed, chosen) is None and not any(s == seed for s, _ in running):
                        for record in fill_not_scored(records, seed, chosen):
                            write(record, sink)
                        open_seeds.remove(seed)
                        if seed not in driven:                   # finished in an earlier run: nothing to say
                            continue
                        n_scored = len(scored_seeds(records, chosen))
                        (args.out / "progress.json").write_text(json.dumps({
                            "seed": seed, "scored_seeds": n_scored, "target": args.seeds,
                            "episodes_this_run": episodes_run, "workers": args.workers,
                            "episodes_per_hour": round(episodes_run / max(time.time() - start, 1e-6) * 3600, 1),
                            "elapsed_h": round((time.time() - start) / 3600, 2), "log": str(log)}, indent=1))
                        print(f"[closed_loop] seed {seed} done: {n_scored}/{args.seeds} seeds scored in every "
                              "setting", flush=True)
    finally:
        workers.close()
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds with a driving outcome in every setting (blocked / failed seeds are replaced; "
                             f"default {PROTOCOL_SEEDS}, {DENSE_SPLIT_SEEDS} in denser traffic)")
    parser.add_argument("--first-seed", type=int, default=None,
                        help=f"default {HELD_OUT_SEEDS}; {CONFIRMATION_FIRST_SEED} with --confirm")
    parser.add_argument("--confirm", action="store_true",
                        help=f"protocol {CONFIRMATION_PROTOCOL}: the confirmation on fresh seeds of the setting chosen "
                             f"on protocol {PROTOCOL_VERSION} ({', '.join(CONFIRMATION_SETTINGS)}, bounded tail on, "
                             "each seed's settings in an order drawn from the seed); its report is "
                             "docs/closed_loop_confirmation.json and its headline goes into docs/closed_loop.json")
    parser.add_argument("--density", type=float, default=TRAFFIC_DENSITY,
                        help="traffic density, trigger mode (the protocol's main split: %(default)s)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="override the step cap from the route length (quick looks; kept apart in the log)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="manifest.json of the exported model")
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--fixed-layers", type=int, nargs="+", default=None,
                        help="layers of the fixed exits (default: deead's mean depth at 2 m and at the recommended "
                             "delta in docs/bench_exit.json, when it measured this model)")
    parser.add_argument("--settings", nargs="*", default=None,
                        help="a subset of the settings (default: all; in denser traffic the expert, full depth, deead "
                             "at the recommended delta and the fixed exit at its depth)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the episode log goes (default runs/closed_loop, runs/closed_loop_confirm with "
                             "--confirm)")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--workers", type=worker_count, default=1,
                        help="episodes driven at once: worker processes, or Ray actors with --ray / --ray-address")
    parser.add_argument("--ray", action="store_true", help="run the episodes as local Ray actors (ray.init)")
    parser.add_argument("--ray-address", default="", help="join an existing Ray cluster (e.g. auto, ray://head:10001)")
    parser.add_argument("--episode-timeout-s", type=float, default=3600.0,
                        help="give up on an episode after this long, a backstop: worker processes (and Ray actors, "
                             "each supervising one) detect a hang sooner (no simulated step while burning CPU)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--trace", nargs=2, metavar=("SEED", "SETTING"), default=None,
                        help="drive one episode and write what the model saw and planned at every step, and what "
                             "the car did, to <out>/trace_SEED_SETTING_MODEL.csv and .png")
    args = parser.parse_args(argv)
    if not Path(args.model).exists():
        print(f"closed_loop: no model at {args.model}; run `make setup` or pass --model", file=sys.stderr)
        return 2
    manifest = load_manifest(args.model, verify=False)
    recommended_delta_m = float(default("exit.delta_m"))
    args.protocol = CONFIRMATION_PROTOCOL if args.confirm else PROTOCOL_VERSION
    if args.first_seed is None:
        args.first_seed = CONFIRMATION_FIRST_SEED if args.confirm else HELD_OUT_SEEDS
    if args.out is None:
        args.out = REPO / "runs" / ("closed_loop_confirm" if args.confirm else "closed_loop")
    if args.confirm:
        args.fixed_layers = args.fixed_layers or []
    if args.fixed_layers is not None:
        fixed: list[str | None] = [setting_name("fixed", layer) for layer in args.fixed_layers]
    else:
        fixed = [matched_fixed(BENCH_EXIT_JSON, manifest.model_version, delta) for delta in (2.0, recommended_delta_m)]
        if None in fixed:
            print(f"closed_loop: {BENCH_EXIT_JSON} did not measure deead at 2 m and at {recommended_delta_m:g} m on "
                  f"{manifest.model_version!r}, so the fixed exits' layers (their mean depths) are unknown; run "
                  "bench/bench_exit.py on this model or pass --fixed-layers", file=sys.stderr)
            return 2
    if args.seeds is None:
        args.seeds = split_seeds(args.density)
    if args.settings:
        chosen = args.settings
    elif args.confirm:
        chosen = list(CONFIRMATION_SETTINGS)
    elif is_main_split(args.density):
        chosen = settings([name for name in fixed if name is not None], recommended_delta_m)
    else:
        chosen = dense_split_settings(fixed[-1], recommended_delta_m)
    model_sha = model_sha256(manifest)
    model_id = model_sha[:12]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.trace:
        return trace_episode(int(args.trace[0]), args.trace[1], args, args.out / f"trace_{args.trace[0]}_"
                             f"{args.trace[1]}_{model_id}")
    log = log_path(args.out, args.density)
    if args.report_only:
        records = load_records(log, model_id, args.density, args.max_steps, args.protocol)
    else:
        records = run(args, chosen, model_id, log)
    try:
        summary = summarise(records, chosen)
    except ValueError as err:                   # two outcomes for one episode
        print(f"closed_loop: {log}: {err}", file=sys.stderr)
        return 2
    if not summary["seeds"]:
        print("closed_loop: no seed scored in every setting yet", file=sys.stderr)
        return 2
    print_table(summary)
    args.docs.mkdir(parents=True, exist_ok=True)
    report = {"protocol": args.protocol, "expert_version": EXPERT_VERSION, "max_checks": max_checks_of(args.protocol),
              "protocol_doc": "docs/closed_loop_protocol.md", "density": args.density,
              "traffic_mode": "trigger", "reactive_traffic": True, "seeds_from": args.first_seed,
              "cap_override": args.max_steps, "model_version": manifest.model_version,
              "model_sha256": model_sha, **summary}
    name = "closed_loop_confirmation.json" if args.confirm else report_name(args.density)
    (args.docs / name).write_text(json.dumps(_jsonable(report), indent=1))
    plot(summary, args.density, args.docs / name.replace(".json", ".png"), args.protocol)
    if args.confirm and set(CONFIRMATION_SETTINGS) <= set(chosen):
        main_report = args.docs / report_name(args.density)
        merged = json.loads(main_report.read_text()) if main_report.exists() else {}
        merged["headline"] = _jsonable({**confirmation_headline(summary), "report": f"docs/{name}",
                                        "protocol": CONFIRMATION_PROTOCOL})
        main_report.write_text(json.dumps(merged, indent=1))
        print(json.dumps(merged["headline"]))
    headline = {"seeds": len(summary["seeds"]), "not_scored": {k: len(v) for k, v in summary["not_scored"].items()},
                "sim_failure_by_setting": {k: len(v) for k, v in summary["sim_failure_by_setting"].items()}}
    if EXPERT in summary["settings"]:
        e = summary["settings"][EXPERT]
        headline.update(expert_success=round(e["success_rate"], 3), expert_collision=round(e["collision_rate"], 3),
                        expert_at_fault=round(e["at_fault_rate"], 3))
    headline["verdicts"] = {name: c["collision"]["verdict"] for name, c in summary["comparisons"].items()}
    print(json.dumps(headline))
    return 0


def trace_episode(seed: int, setting: str, args: argparse.Namespace, stem: Path) -> int:
    """Drive one episode in this process, recording every step; write stem.csv and stem.png."""
    import csv

    from deead_lab.driving.loop import drive, open_runner, policy_for
    from deead_lab.driving.tracker import PurePursuit
    if setting == EXPERT:
        print("closed_loop: --trace follows the model; the expert has no plan to trace", file=sys.stderr)
        return 2
    runner = open_runner(args.model, args.first_checkpoint, max_checks_of(args.protocol))
    rows: list[dict[str, float]] = []
    result = drive(seed, setting, runner, policy_for(setting, runner), PurePursuit(dt_s=runner.dt_s),
                   density=args.density, trace=rows, max_steps=args.max_steps)
    csv_path, png_path = (stem.parent / f"{stem.name}{ext}" for ext in (".csv", ".png"))   # a setting has dots
    with csv_path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sees = "sees" if runner.chain.manifest.encoder.config.get("acceleration_input", True) else "does not see"
    plot_trace(rows, f"seed {seed}, {setting}: {result.end_reason} after {result.steps} steps, "
                     f"{result.progress_m:.0f} m (the model {sees} the acceleration)", png_path)
    print(f"[closed_loop] seed {seed} {setting}: {result.end_reason} after {result.steps} steps; wrote "
          f"{csv_path} and .png")
    return 0


def plot_trace(rows: list[dict[str, float]], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t_s"] for r in rows]
    panels = ((("speed_mps", "speed"), ("plan_speed_mps", "plan's speed (tracker target)")),
              (("accel_mps2", "acceleration over 0.5 s"), ("throttle", "throttle / brake")),
              (("lane_offset_m", "offset from lane centre"), ("plan_lateral_3s_m", "plan at 3 s, lateral"),
               ("route_lateral_3s_m", "route at 3 s, lateral")),
              (("nearest_vehicle_m", "nearest vehicle"), ("vehicle_ahead_m", "nearest vehicle ahead (+-2.5 m)")))
    units = ("m/s", "m/s^2, [-1, 1]", "m (left +)", "m, centre to centre")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 10), sharex=True)
    for ax, panel, unit in zip(axes, panels, units):
        for key, label in panel:
            ax.plot(t, [r.get(key, math.nan) for r in rows], label=label)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time, s")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(summary: dict) -> None:
    n = len(summary["seeds"])
    skipped = ", ".join(f"{reason}: {len(seeds)}" for reason, seeds in summary["not_scored"].items()) or "none"
    print(f"{n} seeds scored in every setting (not scored: {skipped}); rates with 95% Wilson intervals")
    print(f"{'setting':>20} {'success':>17} {'collision':>17} {'at fault':>17} {'out of road':>17} "
          f"{'completion':>11} {'score':>17} {'exit':>6} {'ms':>6}")
    def rate(s: dict, k: str) -> str:
        return f"{s[k + '_rate']:.2f} [{s[k + '_ci'][0]:.2f},{s[k + '_ci'][1]:.2f}]"

    for name, s in summary["settings"].items():
        print(f"{name:>20} {rate(s, 'success'):>17} {rate(s, 'collision'):>17} {rate(s, 'at_fault'):>17} "
              f"{rate(s, 'out_of_road'):>17} {s['completion']:>11.2f} {s['score']:.2f} [{s['score_ci'][0]:.2f},"
              f"{s['score_ci'][1]:.2f}] {s['mean_exit_layer']:>6.1f} {s['plan_ms_p50']:>6.1f}")
    for name, c in summary["comparisons"].items():
        col, score = c["collision"], c["score"]
        print(f"{name:>20} vs full: collision {col['diff']:+.3f} 90% [{col['ci90'][0]:+.3f},{col['ci90'][1]:+.3f}] "
              f"McNemar p={col['mcnemar_p']:.3f} -> {col['verdict']}; score {score['diff']:+.3f} -> "
              f"{score['verdict']}; worse than full: {c['worse_than_full']}")


def plot(summary: dict, density: float, path: Path, protocol: int = PROTOCOL_VERSION) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = list(summary["settings"])
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 5, figsize=(22, 4))
    for ax, key, title in ((axes[0], "success", "arrived"), (axes[1], "collision", "collision rate"),
                           (axes[2], "at_fault", "at-fault collision rate"), (axes[3], "out_of_road", "out of road")):
        rates = np.array([summary["settings"][n][f"{key}_rate"] for n in names])
        ci = np.array([summary["settings"][n][f"{key}_ci"] for n in names])
        ax.bar(x, rates, yerr=[rates - ci[:, 0], ci[:, 1] - rates], capsize=3, color="tab:blue")
        ax.set(title=f"{title} (95% Wilson)", ylim=(0, 1))
    scores = np.array([summary["settings"][n]["score"] for n in names])
    ci = np.array([summary["settings"][n]["score_ci"] for n in names])
    axes[4].bar(x, scores, yerr=[scores - ci[:, 0], ci[:, 1] - scores], capsize=3, color="tab:green")
    axes[4].set(title="driving score (95% bootstrap)", ylim=(0, 1.05))
    for ax in axes:
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    fig.suptitle(f"closed loop (protocol {protocol}), MetaDrive held-out maps, full routes, traffic density "
                 f"{density}, {len(summary['seeds'])} paired seeds per setting")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
