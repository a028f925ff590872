"""Closed-loop safety in MetaDrive: the model drives held-out maps at full depth and with early exit.

Runs in the MetaDrive venv (`make metadrive`); resumable (finished episodes are kept in
<out>/episodes.jsonl, tagged with the sha256 of the weights that drove them, and skipped; a new
model starts over, the expert's episodes are kept). Jobs go seed by seed, every setting on a seed
before the next seed, so a run cut short still compares all settings on the same episodes.

    make closed-loop                                   # 60 held-out seeds x 8 settings
    .venv-metadrive/bin/python bench/closed_loop.py --episodes 4               # a quick look
    .venv-metadrive/bin/python bench/closed_loop.py --report-only              # tables from what exists
    .venv-metadrive/bin/python bench/closed_loop.py --trace 3001 full          # one episode, step by step

Settings: the IDM expert (the data set's driver: the reference for route completion), the model at
full depth, deead at delta 0.5 / 1 / 2 m, a fixed exit at --fixed-layer, patience, and
deead-or-patience at 2 m. Writes docs/closed_loop.json and docs/closed_loop.png and ends with one
JSON line: episodes, collision rates of full depth and deead at 2 m with their 95% intervals, and
whether the intervals overlap.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))    # measure this checkout

from deead_ros.engines.manifest import load_manifest  # noqa: E402
from deead_ros.parameters import default  # noqa: E402
from deead_ros.tools.closed_loop import EXPERT, left_out, summarise, timed_out  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / ".venv" / "share" / "deead_ros" / "models" / "demo" / "onnx" / "manifest.json"
HELD_OUT_SEEDS = 3000          # maps never used for training (0-109), validation (1000-1009) or test (2000-2013)


def driver(setting: str, model_id: str) -> str:
    """Who drove an episode: the expert (the same for every model) or the model with these weights."""
    return EXPERT if setting == EXPERT else model_id


def settings(fixed_layer: int) -> list[str]:
    return [EXPERT, "full", "deead_0.5", "deead_1", "deead_2", f"fixed_{fixed_layer}", "patience",
            "deead_or_patience_2"]


_worker_state: dict = {}


def _init_worker(model: str, first_checkpoint: int) -> None:
    """Open the engines once per worker process."""
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.runner import Runner
    runner = Runner(make_engine("onnxruntime", model, num_threads=1), ExitSettings(first_checkpoint=first_checkpoint),
                    PriorSettings())
    _worker_state["runner"] = runner


def _policy(setting: str):
    from deead_ros.exit import AnyOfPolicy, FixedPolicy, FullPolicy
    base, _ = _worker_state["runner"].settings
    kind, _, value = setting.rpartition("_")
    if setting == "full":
        return FullPolicy()
    if setting == "patience":
        return replace(base, policy="patience").build_policy()
    if kind == "fixed":
        return FixedPolicy(int(value))
    if kind == "deead":
        return replace(base, delta_m=float(value)).build_policy()
    if kind == "deead_or_patience":
        return AnyOfPolicy((replace(base, delta_m=float(value)).build_policy(),
                            replace(base, policy="patience").build_policy()), name="deead_or_patience")
    raise ValueError(f"unknown setting '{setting}'")


def _run(job: tuple[int, str, int]) -> dict:
    from deead_ros.tools.closed_loop import PurePursuit, drive
    seed, setting, max_steps = job
    runner = None if setting == EXPERT else _worker_state["runner"]
    policy = None if setting == EXPERT else _policy(setting)
    return drive(seed, setting, runner, policy, max_steps, PurePursuit(dt_s=runner.dt_s if runner else 0.5)).as_dict()


def run_jobs(jobs: list[tuple[int, str, int]], args: argparse.Namespace,
             skip: Callable[[int], bool]) -> Iterator[dict]:
    """Yield each job's episode, in order; an episode over --episode-timeout-s is recorded as sim_timeout.

    Jobs on a seed that skip() says is left out anyway (the expert spawned into a crash, or the
    simulator hung on it) are not run.

    One worker process runs one episode at a time; the episode log is appended a line at a time, so
    two runs on disjoint --settings can share it (about twice as fast on 2 cores). Why the timeout:
    MetaDrive 0.2.6's renderer now and then takes minutes or never returns a frame (inside Panda3D's
    getScreenshot); the worker is killed and a fresh one takes the next job.
    """
    ctx = mp.get_context("spawn")
    pool = None
    try:
        for job in jobs:
            if skip(job[0]):
                continue
            if pool is None:
                pool = ctx.Pool(1, initializer=_init_worker, initargs=(args.model, args.first_checkpoint),
                                maxtasksperchild=8)
            pending = pool.apply_async(_run, (job,))
            try:
                yield pending.get(timeout=args.episode_timeout_s)
            except mp.TimeoutError:
                pool.terminate()
                pool = None
                seed, setting, _ = job
                yield timed_out(seed, setting, args.episode_timeout_s)
    finally:
        if pool is not None:
            pool.terminate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=60,
                        help="held-out seeds, from %d (a few are left out: the ego spawns into a collision); "
                             "the default nets at least 50" % HELD_OUT_SEEDS)
    parser.add_argument("--max-steps", type=int, default=200, help="episode cap in 0.1 s steps")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="manifest.json of the exported model")
    parser.add_argument("--first-checkpoint", type=int, default=default("exit.first_checkpoint"))
    parser.add_argument("--fixed-layer", type=int, default=11, help="bench_exit's mean depth of deead at 2 m")
    parser.add_argument("--settings", nargs="*", default=None, help="a subset of the settings")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "closed_loop")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    parser.add_argument("--episode-timeout-s", type=float, default=240.0,
                        help="give up on an episode after this long (the simulator's renderer can hang)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--trace", nargs=2, metavar=("SEED", "SETTING"), default=None,
                        help="drive one episode and write what the model saw and planned at every step, and what "
                             "the car did, to <out>/trace_SEED_SETTING_MODEL.csv and .png")
    args = parser.parse_args(argv)
    chosen = args.settings or settings(args.fixed_layer)
    if not Path(args.model).exists():
        print(f"closed_loop: no model at {args.model}; run `make setup` or pass --model", file=sys.stderr)
        return 2
    manifest = load_manifest(args.model, verify=False)
    model_id = manifest.weights.sha256[:12]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.trace:
        return trace_episode(int(args.trace[0]), args.trace[1], args, args.out / f"trace_{args.trace[0]}_"
                             f"{args.trace[1]}_{model_id}")
    log = args.out / "episodes.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = [e for e in done
            if e.get("max_steps") == args.max_steps and e.get("model") == driver(e["setting"], model_id)]
    have = {(e["seed"], e["setting"]) for e in done}
    jobs = [(seed, s, args.max_steps) for seed in range(HELD_OUT_SEEDS, HELD_OUT_SEEDS + args.episodes)
            for s in chosen if (seed, s) not in have]
    if jobs and not args.report_only:
        print(f"[closed_loop] {len(have)} episodes done, {len(jobs)} to run ({len(chosen)} settings, "
              f"{args.max_steps} steps cap) -> {log}", flush=True)
        start = time.time()
        with log.open("a") as sink:
            for i, episode in enumerate(run_jobs(jobs, args, lambda seed: seed in left_out(done)), 1):  # seed-major
                episode["max_steps"] = args.max_steps
                episode["model"] = driver(episode["setting"], model_id)
                sink.write(json.dumps(episode) + "\n")
                sink.flush()
                done.append(episode)
                eta_min = (time.time() - start) / i * (len(jobs) - i) / 60
                print(f"[closed_loop] {i}/{len(jobs)} seed {episode['seed']} {episode['setting']:>20}: "
                      f"{episode['end_reason']:>13} after {episode['steps']:3d} steps, "
                      f"{episode['progress_m']:6.1f} m, exit {episode['mean_exit_layer']:.1f}, "
                      f"{episode['wall_s']:.0f} s; eta {eta_min:.0f} min", flush=True)
    episodes = [e for e in done if e["setting"] in chosen]
    summary = summarise(episodes, args.max_steps)
    if not summary:
        print("closed_loop: no episodes yet", file=sys.stderr)
        return 2
    print_table(summary)
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "closed_loop.json").write_text(json.dumps(
        {"max_steps": args.max_steps, "seeds_from": HELD_OUT_SEEDS, "model_version": manifest.model_version,
         "model_sha256": manifest.weights.sha256, "settings": summary}, indent=1))
    plot(summary, args.docs / "closed_loop.png")
    headline = {"episodes_per_setting": min(s["episodes"] for s in summary.values())}
    for name in ("full", "deead_2"):
        if name in summary:
            headline[f"collision_rate_{name}"] = round(summary[name]["collision_rate"], 3)
            headline[f"collision_ci_{name}"] = [round(v, 3) for v in summary[name]["collision_ci"]]
    if "full" in summary and "deead_2" in summary:
        (a_low, a_high), (b_low, b_high) = summary["full"]["collision_ci"], summary["deead_2"]["collision_ci"]
        headline["collision_intervals_overlap"] = bool(a_low <= b_high and b_low <= a_high)
    print(json.dumps(headline))
    return 0


def trace_episode(seed: int, setting: str, args: argparse.Namespace, stem: Path) -> int:
    """Drive one episode in this process, recording every step; write stem.csv and stem.png."""
    import csv

    from deead_ros.tools.closed_loop import PurePursuit, drive
    if setting == EXPERT:
        print("closed_loop: --trace follows the model; the expert has no plan to trace", file=sys.stderr)
        return 2
    _init_worker(args.model, args.first_checkpoint)
    runner = _worker_state["runner"]
    rows: list[dict[str, float]] = []
    result = drive(seed, setting, runner, _policy(setting), args.max_steps, PurePursuit(dt_s=runner.dt_s), trace=rows)
    with stem.with_suffix(".csv").open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sees = "sees" if runner.chain.manifest.encoder.config.get("acceleration_input", True) else "does not see"
    plot_trace(rows, f"seed {seed}, {setting}: {result.end_reason} after {result.steps} steps, "
                     f"{result.progress_m:.0f} m (the model {sees} the acceleration)", stem.with_suffix(".png"))
    print(f"[closed_loop] seed {seed} {setting}: {result.end_reason} after {result.steps} steps; wrote "
          f"{stem.with_suffix('.csv')} and .png")
    return 0


def plot_trace(rows: list[dict[str, float]], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t_s"] for r in rows]
    panels = ((("speed_mps", "speed"), ("plan_speed_mps", "plan's speed (tracker target)")),
              (("accel_mps2", "acceleration over 0.5 s"), ("throttle", "throttle / brake")),
              (("lane_offset_m", "offset from lane centre"), ("plan_lateral_3s_m", "plan at 3 s, lateral"),
               ("route_lateral_3s_m", "route at 3 s, lateral")))
    units = ("m/s", "m/s^2, [-1, 1]", "m (left +)")
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 8), sharex=True)
    for ax, panel, unit in zip(axes, panels, units):
        for key, label in panel:
            ax.plot(t, [r[key] for r in rows], label=label)
        ax.set_ylabel(unit)
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time, s")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(summary: dict) -> None:
    n = min(s["episodes"] for s in summary.values())
    excluded = next(iter(summary.values()))["excluded_seeds"]
    print(f"{n} episodes per setting (the seeds every setting finished; left out, the ego spawned into a "
          f"collision or the simulator hung: {excluded}); rates with 95% Wilson intervals")
    print(f"{'setting':>20} {'collision':>17} {'off-road':>17} {'success':>17} {'completion':>11} "
          f"{'score':>17} {'exit':>6} {'ms':>6}")
    for name, s in summary.items():
        rate = lambda k: f"{s[k + '_rate']:.2f} [{s[k + '_ci'][0]:.2f},{s[k + '_ci'][1]:.2f}]"  # noqa: E731
        print(f"{name:>20} {rate('collision'):>17} {rate('off_road'):>17} {rate('success'):>17} "
              f"{s['route_completion']:>11.2f} {s['driving_score']:.2f} [{s['driving_score_ci'][0]:.2f},"
              f"{s['driving_score_ci'][1]:.2f}] {s['mean_exit_layer']:>6.1f} {s['plan_ms_p50']:>6.1f}")


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    names = list(summary)
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in ((axes[0], "collision", "collision rate"), (axes[1], "success", "success rate")):
        rates = np.array([summary[n][f"{key}_rate"] for n in names])
        ci = np.array([summary[n][f"{key}_ci"] for n in names])
        ax.bar(x, rates, yerr=[rates - ci[:, 0], ci[:, 1] - rates], capsize=3, color="tab:blue")
        ax.set(title=f"{title} (95% Wilson)", ylim=(0, 1))
    scores = np.array([summary[n]["driving_score"] for n in names])
    ci = np.array([summary[n]["driving_score_ci"] for n in names])
    axes[2].bar(x, scores, yerr=[scores - ci[:, 0], ci[:, 1] - scores], capsize=3, color="tab:green")
    axes[2].set(title="driving score (95% CI)", ylim=(0, 1.05))
    for ax in axes:
        ax.set_xticks(x, names, rotation=40, ha="right", fontsize=8)
    fig.suptitle(f"closed loop, MetaDrive held-out maps, {min(s['episodes'] for s in summary.values())} "
                 "episodes per setting")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
