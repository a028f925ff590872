"""On-disk format of the MetaDrive driving data set.

numpy and the runtime's base layer only (deead_ros.geometry, deead_ros.files): the collector imports
this module in the MetaDrive venv (numpy 1.23), the trainer and the tests in the main environment
(numpy 2). Frames, angles and polylines are deead_ros.geometry's, the ones the node plans with.

One episode (= one generated map, named by its map seed) is one compressed ``.npz`` file,
``<root>/<split>/ep_<seed:05d>.npz``, with N frames at 10 Hz:

==================  ==============  =====================================================================
key                 shape / dtype   meaning
==================  ==============  =====================================================================
images              (N,H,W,3) u1    front RGB camera, RGB channel order
pose                (N,3) f8        ego x, y [m], yaw [rad] in the world frame (right-handed, see below)
speed               (N,) f4         ego speed [m/s]
yaw_rate            (N,) f4         ego yaw rate [rad/s], positive = turning left
route_world         (N,R,2) f4      centre line of the ego's own navigation lane sequence, world frame,
                                    every ROUTE_SPACING_M from the point abreast of the ego
                                    (index 0) forward; padded by repeating the last valid point
route_valid         (N,) i2         how many leading points of route_world are real (not padding)
command             (N,) <U         text command derived from the route geometry (see COMMANDS)
scenario            (N,) <U         scenario label (see SCENARIOS)
future_ego          (N,6,2) f4      expert's own future positions at FUTURE_TIMES_S, in the ego frame
                                    of that frame (x forward, y left) [m]
has_full_future     (N,) bool       every stored frame has its 3 s future (the tail is dropped)
future_clean        (N,) bool       no crash / out-of-road from this frame to the end of its future
crash_vehicle       (N,) bool       simulator flags at this frame
crash_object        (N,) bool
out_of_road         (N,) bool
timestamp           (N,) f8         simulated time [s] since the episode start
map_seed            () int          the map seed (= episode id)
meta                () <U           JSON: collector config, map blocks, traffic density, counts, ...
==================  ==============  =====================================================================

World frame: right-handed, x east, y north, yaw counter-clockwise from +x, so moving forward at yaw
adds (cos yaw, sin yaw) per metre and turning left increases yaw. (MetaDrive 0.2.6's own 2-D frame is
left-handed, y flipped; the collector converts: y = -y_md, yaw = -yaw_md.)
Ego frame of a pose: origin at the ego, x forward, y to the left.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from deead_ros.files import replacing
from deead_ros.geometry import world_to_ego

DT_S = 0.1                                        # one simulator step
FUTURE_TIMES_S = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)   # horizon of future_ego
FUTURE_STEPS = tuple(int(round(t / DT_S)) for t in FUTURE_TIMES_S)   # 5, 10, ..., 30
ROUTE_SPACING_M = 2.0                             # spacing of route_world points
ROUTE_POINTS = 41                                 # R: 0 .. 80 m ahead
SPLITS = ("train", "val", "test", "test_dense", "calib")  # test_dense: held-out maps in denser traffic; calib:
#                                                      maps kept for deead_calibrate (whole drives as its units)

COMMANDS = (
    "follow the lane",
    "turn left at the junction",
    "turn right at the junction",
    "go straight at the junction",
    "change lane to the left",
    "change lane to the right",
)
SCENARIOS = (
    "straight",
    "curve",
    "junction_left",
    "junction_right",
    "junction_straight",
    "roundabout",
    "lane_change",
    "following_traffic",
    "stopped",
)

ARRAY_KEYS = (
    "images", "pose", "speed", "yaw_rate", "route_world", "route_valid", "command", "scenario",
    "future_ego", "has_full_future", "future_clean", "crash_vehicle", "crash_object", "out_of_road",
    "timestamp",
)
SCALAR_KEYS = ("map_seed", "meta")
KEYS = ARRAY_KEYS + SCALAR_KEYS

DTYPES = {
    "images": np.uint8, "pose": np.float64, "speed": np.float32, "yaw_rate": np.float32,
    "route_world": np.float32, "route_valid": np.int16, "future_ego": np.float32,
    "has_full_future": np.bool_, "future_clean": np.bool_, "crash_vehicle": np.bool_,
    "crash_object": np.bool_, "out_of_road": np.bool_, "timestamp": np.float64,
}


def episode_path(root: str | os.PathLike, split: str, seed: int) -> Path:
    """Return the path of one episode file: <root>/<split>/ep_<seed:05d>.npz."""
    return Path(root) / split / f"ep_{seed:05d}.npz"


# --------------------------------------------------------------------------- frames and transforms
def future_in_ego(pose: np.ndarray, steps: tuple[int, ...] = FUTURE_STEPS) -> np.ndarray:
    """Express the future positions of a pose sequence (T, 3) in each frame's ego frame.

    Returns (T - max(steps), len(steps), 2): row t holds the positions at t + steps in the ego frame
    of t. Frames without the full future are not returned.
    """
    pose = np.asarray(pose, dtype=np.float64)
    n = pose.shape[0] - max(steps)
    if n <= 0:
        return np.zeros((0, len(steps), 2))
    idx = np.arange(n)[:, None] + np.asarray(steps)[None, :]          # (n, K)
    return world_to_ego(pose[idx, :2], pose[:n])


def yaw_rate_from_yaw(yaw: np.ndarray, dt: float = DT_S) -> np.ndarray:
    """Compute the yaw rate [rad/s] by central differences of the unwrapped yaw (one-sided at the ends)."""
    yaw = np.unwrap(np.asarray(yaw, dtype=np.float64))
    if yaw.size < 2:
        return np.zeros_like(yaw)
    return np.gradient(yaw, dt)


# --------------------------------------------------------------------------- IO
def save_episode(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write one episode atomically (deead_ros.files.replacing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    problems = validate_episode(data)
    if problems:
        raise ValueError(f"refusing to write {path}: " + "; ".join(problems))
    arrays = {k: np.asarray(data[k]) for k in ARRAY_KEYS}
    arrays["map_seed"] = np.asarray(int(data["map_seed"]))
    meta = data["meta"]
    arrays["meta"] = np.asarray(meta if isinstance(meta, str) else json.dumps(meta, sort_keys=True))
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, allow_pickle=True, **arrays)   # numpy's default, named so no array fills it


def load_episode(path: str | os.PathLike, images: bool = True) -> dict[str, Any]:
    """Read one episode into a dict of arrays; `map_seed` becomes int and `meta` a dict.

    With images=False the (large) image array is not decompressed.
    """
    out: dict[str, Any] = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            if k == "images" and not images:
                continue
            out[k] = z[k]
    out["map_seed"] = int(out["map_seed"])
    out["meta"] = json.loads(str(out["meta"]))
    return out


def is_complete(path: str | os.PathLike) -> bool:
    """Tell whether `path` is a readable episode file holding every key (used to resume collection)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return all(k in z.files for k in KEYS)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def validate_episode(d: dict[str, Any]) -> list[str]:
    """List the shape and dtype problems of an episode dict (empty when it is well formed)."""
    problems = []
    missing = [k for k in KEYS if k not in d]
    if missing:
        return [f"missing keys {missing}"]
    n = len(d["pose"])
    for k in ARRAY_KEYS:
        a = np.asarray(d[k])
        if a.shape[:1] != (n,):
            problems.append(f"{k}: first dim {a.shape[:1]} != ({n},)")
        if k in DTYPES and a.dtype != DTYPES[k]:
            problems.append(f"{k}: dtype {a.dtype} != {np.dtype(DTYPES[k])}")
        if k in ("command", "scenario") and a.dtype.kind != "U":
            problems.append(f"{k}: dtype {a.dtype} is not unicode")
    img = np.asarray(d["images"])
    if img.ndim != 4 or img.shape[-1] != 3:
        problems.append(f"images: shape {img.shape} is not (N,H,W,3)")
    if np.asarray(d["pose"]).shape[1:] != (3,):
        problems.append("pose: not (N,3)")
    if np.asarray(d["route_world"]).shape[2:] != (2,):
        problems.append("route_world: not (N,R,2)")
    if np.asarray(d["future_ego"]).shape[1:] != (len(FUTURE_STEPS), 2):
        problems.append(f"future_ego: not (N,{len(FUTURE_STEPS)},2)")
    return problems
