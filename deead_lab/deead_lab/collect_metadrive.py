"""Collect the MetaDrive driving data set: yielding IDM expert drives, front RGB camera, route, future plan.

Run it in the MetaDrive venv (``scripts/setup_metadrive.sh``)::

    .venv-metadrive/bin/python -m deead_lab.collect_metadrive --out data/metadrive \\
        --test-seeds 2000:2014 --val-seeds 1000:1010 --train-seeds 0:110 --workers 2

One map seed is one episode: MetaDrive 0.2.6 builds a procedural map from a block sequence drawn
from the seed (3-5 blocks after the entrance, at least one intersection, T-junction or roundabout
among the first two), two or three lanes, a random spawn lane, spawn offset, initial speed and IDM
target speed, so speeds and situations vary between episodes. Expert and traffic are those of the
closed loop (docs/closed_loop_protocol.md): traffic density 0.1 in trigger mode (``--traffic-density``
to change it), reactive traffic, and the ego driven by ``YieldingIDM``: MetaDrive's ``IDMPolicy``
that also gives way to vehicles whose path crosses its own first (``yield_to``; the action given
to ``step`` is ignored). Touching a solid line no longer ends an episode. Each 0.1 s step
records the camera image, the ego state, the route ahead (the centre line of the ego's own lane,
continued through the lanes of its navigation checkpoints), a command derived from that route, a
scenario label and the simulator's safety flags. After the episode the expert's future positions
at 0.5 ... 3.0 s are expressed in each frame's ego frame; the last 30 steps (no full future) are
dropped. The file format is documented in ``deead_lab/deead_lab/dataset_format.py``.

The simulator's parts live in ``deead_lab.sim``: the scenario and env (``scenario``, with the frame
conversion and the CPU rendering settings), the traffic model (``traffic``), the lane-change
commander (``commander``), the route labels (``labels``) and one episode (``episode``); this module
runs them over many seeds in worker processes and holds the simulator's self-checks.

Output: ``<out>/{train,val,test}/ep_<seed:05d>.npz``, written atomically. An existing complete file
is skipped (resumable). An episode whose simulation raises is retried once, then logged to
``<out>/skipped.txt`` and skipped. Only numpy, MetaDrive, the lab's
``dataset_format`` and ``sim`` and the runtime's base layer are imported.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np

from deead_lab.sim.episode import make_env, run_episode, start_episode
from deead_lab.sim.labels import to_right_handed
from deead_lab.sim.scenario import (DENSE_TRAFFIC_DENSITY, IMAGE_H, IMAGE_W, LANE_CHANGE_SHARE, MAX_STEPS,
                                    TRAFFIC_DENSITY, episode_config)
from deead_lab import dataset_format as fmt
from deead_lab.sim_workers import ProcessWorkers, StallWatch, worker_count
from deead_ros.geometry import world_to_ego

# --------------------------------------------------------------------------- workers
def _parse_seeds(text: str | None) -> list[int]:
    """Parse '0:100' (end exclusive), '5,7,9' or '' into a list of seeds."""
    if not text:
        return []
    if ":" in text:
        a, b = text.split(":")
        return list(range(int(a), int(b)))
    return [int(x) for x in text.split(",") if x.strip()]


_collector_state: dict[str, Any] = {}    # in a worker process: the collection settings and the stall watch


def _init_collector(settings: dict[str, Any], watch: StallWatch) -> None:
    _collector_state.update(settings=settings, watch=watch)


def _collect_episode(job: tuple[str, int]) -> tuple[int, int, str]:
    """Simulate and save one episode (split, seed) in a worker; returns (frames, steps simulated, end)."""
    split, seed = job
    settings, watch = _collector_state["settings"], _collector_state["watch"]
    density = settings["dense_traffic_density" if split == "test_dense" else "traffic_density"]
    data = run_episode(seed, settings["max_steps"], settings["width"], settings["height"], density,
                       settings["lane_change_share"], on_step=watch.beat)
    fmt.save_episode(fmt.episode_path(Path(settings["out"]), split, seed), data)
    meta = json.loads(data["meta"])
    return len(data["pose"]), meta["steps_simulated"], meta["end_reason"]


def collect(args) -> int:
    """Supervise worker processes over the seed plan (test, then val, then train); resumable."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plan = [("test", s) for s in _parse_seeds(args.test_seeds)] + \
           [("test_dense", s) for s in _parse_seeds(args.test_dense_seeds)] + \
           [("calib", s) for s in _parse_seeds(args.calib_seeds)] + \
           [("val", s) for s in _parse_seeds(args.val_seeds)] + \
           [("train", s) for s in _parse_seeds(args.train_seeds)]
    seen: dict[int, str] = {}
    for split, s in plan:
        if s in seen and seen[s] != split:
            raise SystemExit(f"seed {s} is in both {seen[s]} and {split}: splits must not share maps")
        seen[s] = split
    for split, s in plan:                              # and no map of another split already on disk
        for other in fmt.SPLITS:
            if other != split and fmt.episode_path(out, other, s).exists():
                raise SystemExit(f"seed {s} requested for {split} but {out}/{other} already has it")
    skipped_before = set()                           # failed twice in an earlier run: resolved, not retried
    if (out / "skipped.txt").exists():
        skipped_before = {(line.split()[0], int(line.split()[1])) for line in
                          (out / "skipped.txt").read_text().splitlines() if line.strip()}
    todo = [(sp, s) for sp, s in plan
            if (sp, s) not in skipped_before and not fmt.is_complete(fmt.episode_path(out, sp, s))]
    n_skipped_before = sum((sp, s) in skipped_before for sp, s in plan)
    print(f"[collect] {len(plan)} episodes planned, {len(plan) - len(todo) - n_skipped_before} already complete, "
          f"{n_skipped_before} skipped in an earlier run (skipped.txt), {len(todo)} to run with {args.workers} "
          f"worker(s); out={out}", flush=True)
    if not todo:
        return 0
    (out / "collect_config.json").write_text(json.dumps(vars(args), indent=2, sort_keys=True))
    settings = {"out": str(out), "max_steps": args.max_steps, "width": args.width, "height": args.height,
                "traffic_density": args.traffic_density, "lane_change_share": args.lane_change_share,
                "dense_traffic_density": args.dense_traffic_density}
    workers = ProcessWorkers(args.workers, _init_collector, (settings,), _collect_episode,
                             tasks_per_worker=args.episodes_per_worker)
    pending = [(job, 0) for job in todo]                # (split, seed), attempt
    t_start = time.time()
    done = frames = skipped = 0
    try:
        while pending or workers.free < args.workers:
            while pending and workers.free:
                workers.submit(*pending.pop(0))
            for running, result, error in workers.poll(5.0, episode_timeout_s=math.inf):
                split, seed = running.job
                path = fmt.episode_path(out, split, seed)
                if result is None and fmt.is_complete(path):    # the worker failed after saving it: it is done
                    saved = fmt.load_episode(path, images=False)
                    result = (len(saved["pose"]), saved["meta"]["steps_simulated"], saved["meta"]["end_reason"])
                if result is None and running.attempt == 0:
                    print(f"[collect] {split} seed {seed} failed ({error}); retrying once", flush=True)
                    pending.insert(0, (running.job, 1))
                    continue
                done += 1
                if result is None:
                    skipped += 1
                    with open(out / "skipped.txt", "a") as f:
                        f.write(f"{split} {seed} {error}\n")
                    print(f"[collect] {done}/{len(todo)} {split} seed {seed} SKIPPED after 2 attempts: {error}",
                          flush=True)
                    continue
                n, n_sim, end_reason = result
                frames += n
                elapsed = time.time() - t_start
                print(f"[collect] {done}/{len(todo)} {split} seed {seed}: {n} frames (sim {n_sim}, end {end_reason}) "
                      f"in {time.time() - running.started:.0f}s | total {frames} frames, "
                      f"{frames / max(elapsed, 1e-6):.1f} frames/s, elapsed {elapsed / 60:.1f} min, "
                      f"ETA {elapsed / done * (len(todo) - done) / 60:.1f} min", flush=True)
    finally:
        workers.close()
    print(f"[collect] done: {frames} frames in {done - skipped} episodes, {skipped} skipped, "
          f"{(time.time() - t_start) / 60:.1f} min", flush=True)
    return 0


# --------------------------------------------------------------------------- frame check
def check_frame(seed: int, steps: int = 300) -> int:
    """Drive one seed and verify the stored frame convention against the simulator itself.

    Checks: (1) motion is along (cos yaw, sin yaw); (2) over 1 s windows the motion direction and
    yaw turn the same way (so the frame is consistent); (3) the opposing carriageway, which the
    camera shows on the left (right-hand traffic, yellow centre line on the left), has y > 0 in the
    ego frame: the converted frame is right-handed with y to the left, so a left turn raises yaw.
    """
    from metadrive.component.road_network import Road
    ep = episode_config(seed)
    env = make_env(seed, ep, IMAGE_W, IMAGE_H)
    opposing_y = []
    try:
        env.reset()
        v = env.vehicle
        poses = []
        net = v.navigation.map.road_network
        for _ in range(steps):
            env.step([0.0, 0.0])
            p = np.asarray(v.position)
            pose = np.array([p[0], -p[1], -v.heading_theta])
            poses.append((pose[0], pose[1], pose[2], v.speed / 3.6))
            lane = v.navigation.current_lane
            neg = -Road(lane.index[0], lane.index[1])
            if neg.start_node in net.graph and neg.end_node in net.graph[neg.start_node]:
                opp = net.graph[neg.start_node][neg.end_node][0]
                long, _ = opp.local_coordinates(v.position)
                q = to_right_handed(np.asarray(opp.position(long, 0.0)))
                opposing_y.append(float(world_to_ego(q[None], pose)[0, 1]))
    finally:
        env.close()
    a = np.asarray(poses)
    d = np.diff(a[:, :2], axis=0)
    mov = np.linalg.norm(d, axis=1) > 0.2
    fwd = (d[mov, 0] * np.cos(a[:-1][mov, 2]) + d[mov, 1] * np.sin(a[:-1][mov, 2])) / np.linalg.norm(d[mov], axis=1)
    k = 10
    d10 = a[k:, :2] - a[:-k, :2]
    ok = np.linalg.norm(d10, axis=1) > 2.0
    mdir = np.unwrap(np.arctan2(d10[:, 1], d10[:, 0]))
    dm = mdir[k:] - mdir[:-k]
    yaw = np.unwrap(a[:, 2])
    dy = (yaw[2 * k:] - yaw[k:-k])
    turning = ok[k:] & ok[:-k] & (np.abs(dm) > np.radians(5))
    agree = float(np.mean(np.sign(dm[turning]) == np.sign(dy[turning]))) if turning.any() else float("nan")
    spd = np.linalg.norm(d, axis=1) / fmt.DT_S
    opp = float(np.mean(np.asarray(opposing_y) > 0)) if opposing_y else float("nan")
    print(f"forward component of motion along (cos yaw, sin yaw): mean {fwd.mean():.3f} (1 = consistent)")
    print(f"1 s windows turning > 5 deg: {int(turning.sum())}, yaw turns the same way in {agree:.3f}")
    print(f"opposing carriageway on the left (y > 0 in ego frame) in {opp:.3f} of {len(opposing_y)} frames")
    print(f"speed from positions vs stored speed: mean abs diff {np.abs(spd[mov] - a[1:, 3][mov]).mean():.3f} m/s")
    good = fwd.mean() > 0.95 and (not turning.any() or agree > 0.95) and (not opposing_y or opp > 0.95)
    print("frame check", "PASSED" if good else "FAILED")
    return 0 if good else 1


def _drive_for_render_check(seed: int, steps: int, stock_rendering: bool) -> tuple[np.ndarray, float]:
    """Drive the expert on `seed`; return the camera images and the median milliseconds per step."""
    ep = episode_config(seed)
    env = make_env(seed, ep, IMAGE_W, IMAGE_H)
    images, seconds = [], []
    try:
        start_episode(env, ep, stock_rendering)
        for _ in range(steps):
            t0 = time.perf_counter()
            obs, _reward, done, _info = env.step([0.0, 0.0])
            seconds.append(time.perf_counter() - t0)
            images.append(obs["image"][..., -1].copy())
            if done:
                break
    finally:
        env.close()
    return np.stack(images), 1000.0 * float(np.median(seconds))


def check_render(seeds: list[int], steps: int = 150) -> int:
    """Verify that `_render_only_what_is_read` leaves every camera image as MetaDrive makes it; time both ways.

    Each drive runs in a fresh process (state carried between episodes of one process would
    otherwise make two drives differ for reasons of their own).
    """
    good = True
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for seed in seeds:
            (stock, ms_stock), (ours, ms_ours) = pool.starmap(
                _drive_for_render_check, [(seed, steps, True), (seed, steps, False)])
            same = stock.shape == ours.shape and np.array_equal(stock, ours)
            good &= same
            print(f"seed {seed}: {len(stock)} steps, images {'identical' if same else 'DIFFER'}; "
                  f"ms/step as MetaDrive draws and reads {ms_stock:.1f}, the camera alone {ms_ours:.1f} "
                  f"({ms_stock / ms_ours:.2f}x)")
    print("render check", "PASSED" if good else "FAILED")
    return 0 if good else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/metadrive", help="output root (default: %(default)s)")
    p.add_argument("--train-seeds", default="0:110", help="'a:b' (b exclusive) or comma list")
    p.add_argument("--val-seeds", default="1000:1010")
    p.add_argument("--test-seeds", default="2000:2014")
    p.add_argument("--test-dense-seeds", default="", help="held-out maps driven in denser traffic (split test_dense)")
    p.add_argument("--calib-seeds", default="",
                   help="maps kept for deead_calibrate, never trained or tested on (split calib)")
    p.add_argument("--dense-traffic-density", type=float, default=DENSE_TRAFFIC_DENSITY,
                   help="traffic density of the test_dense split (the closed loop's dense split: %(default)s)")
    p.add_argument("--workers", type=worker_count, default=2)
    p.add_argument("--traffic-density", type=float, default=TRAFFIC_DENSITY,
                   help="trigger-mode traffic density (the closed loop's protocol: %(default)s)")
    p.add_argument("--max-steps", type=int, default=MAX_STEPS, help="episode cap in 0.1 s steps")
    p.add_argument("--lane-change-share", type=float, default=LANE_CHANGE_SHARE,
                   help="share of the maps whose expert is commanded to change lanes (default: %(default)s)")
    p.add_argument("--episodes-per-worker", type=int, default=20,
                   help="a worker process is replaced after this many episodes")
    p.add_argument("--width", type=int, default=IMAGE_W)
    p.add_argument("--height", type=int, default=IMAGE_H)
    p.add_argument("--check-frame", type=int, metavar="SEED", default=None,
                   help="only verify the coordinate convention on this seed and exit")
    p.add_argument("--check-render", default=None, metavar="SEEDS",
                   help="only verify that drawing and reading the ego camera alone leaves its images unchanged "
                        "on these seeds ('a:b' or comma list), timing both, and exit")
    args = p.parse_args(argv)
    if args.check_render is not None:
        return check_render(_parse_seeds(args.check_render))
    if args.check_frame is not None:        # in a worker process: Panda3D's teardown aborts the one that made it
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(check_frame, (args.check_frame,))
    return collect(args)


if __name__ == "__main__":
    raise SystemExit(main())
