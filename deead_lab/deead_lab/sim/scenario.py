"""The simulator's set-up: one seed's map and traffic, MetaDrive's env for it, and the constants shared by the
expert, the labels, the collector and the closed loop (the ego's size, "stopped", the camera and its mount).

Coordinates. MetaDrive 0.2.6 keeps its 2-D world as Panda3D's frame with y negated
(``metadrive_position = (x, -y_panda)``, ``heading_theta`` likewise mirrored): a left-handed frame
in which turning left *decreases* heading_theta. Every position, heading and route point stored here
is converted to a right-handed frame: ``x = x_md, y = -y_md, yaw = -heading_theta`` (this is
Panda3D's ground plane). Checked by ``--check-frame``: moving forward adds (cos yaw, sin yaw) per
metre and a left turn increases yaw. ``vehicle.speed`` is km/h in 0.2.6; speed is stored in m/s.

Rendering on a CPU (Mesa llvmpipe via EGL) is only usable with: no terrain, no skybox, offscreen
render, multisampling off and no ``threading-model`` Panda3D line (patched in before the engine
starts), and a small main window.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


IMAGE_W, IMAGE_H = 160, 96
MAX_STEPS = 300                   # episode cap (simulated steps, 30 s)
STOPPED_MPS = 0.5                 # slower than this is standing (labels, the at-fault rule)
VEHICLE_LENGTH_M = 4.5            # MetaDrive's default car
JUNCTION_BLOCKS = ("X", "T", "O")

# Commanded lane changes, drawn per seed (the collector's data only; deead_lab.sim.commander carries them out):
LANE_CHANGE_SHARE = 0.5           # share of the collected maps whose expert is told to change lanes
LANE_CHANGE_FIRST_S = (2.0, 6.0)  # the first command comes this long after the start (uniform)

# Traffic of the closed-loop protocol (docs/closed_loop_protocol.md), also recorded by the collector:
TRAFFIC_DENSITY = 0.1             # MetaDrive's default
DENSE_TRAFFIC_DENSITY = 0.2       # the denser split, reported separately
TRAFFIC_MODE = "trigger"          # a block's vehicles start when the ego reaches it; no respawn
REACTIVE_TRAFFIC = True           # background vehicles yield at conflict points (YieldingIDM)

# MetaDrive 0.2.6's front camera as the collector records it (deead_lab.eval.metadrive_camera draws with it; the
# node's debug.camera_* defaults are these, checked by test/unit/test_sim_constants.py): 0.8 m ahead of and 1.5 m
# above the vehicle's origin, looking at a point 1.6 m further ahead and 0.2 m lower, 60 degrees wide.
CAMERA_FORWARD_M = 0.8
CAMERA_HEIGHT_M = 1.5
CAMERA_PITCH_RAD = math.atan2(0.2, 1.6)
CAMERA_HFOV_DEG = 60.0

# --------------------------------------------------------------------------- per-seed scenario
def episode_config(seed: int, traffic_density: float = TRAFFIC_DENSITY,
                   reactive_traffic: bool = REACTIVE_TRAFFIC, lane_change_share: float = 0.0) -> dict[str, Any]:
    """Draw the map and traffic of one seed deterministically from it (stored in `meta`).

    The map, lanes, speeds and spawn are drawn from the seed as before (the same maps as earlier
    data sets); traffic follows the protocol: `traffic_density` in trigger mode, reactive or not.
    With `lane_change_share` > 0, that share of the seeds (drawn from a generator of its own, so the
    other draws stay) gets `lane_changes`: the expert is commanded to change lanes (`LaneChangeCommander`).
    """
    rng = np.random.default_rng(1_000_003 + seed)
    n_blocks = int(rng.integers(3, 6))
    pool, weights = ["C", "S", "X", "T", "O"], np.array([0.32, 0.13, 0.22, 0.2, 0.13])
    blocks = list(rng.choice(pool, size=n_blocks, p=weights / weights.sum()))
    if not any(b in JUNCTION_BLOCKS for b in blocks[:2]):
        blocks[int(rng.integers(0, 2))] = str(rng.choice(["X", "T", "O"], p=[0.4, 0.35, 0.25]))
    lane_num = int(rng.choice([2, 3, 3]))
    rng.uniform(0.12, 0.30), rng.random()    # the old traffic draws, unused: speeds and spawns stay as they were
    config: dict[str, Any] = {
        "blocks": "".join(blocks),
        "lane_num": lane_num,
        "traffic_density": float(traffic_density),
        "traffic_mode": TRAFFIC_MODE,
        "reactive_traffic": bool(reactive_traffic),
        "target_speed_kmh": round(float(rng.uniform(20.0, 45.0)), 1),
        "spawn_longitude": round(float(rng.uniform(1.0, 8.0)), 2),
        "initial_speed_frac": round(float(rng.uniform(0.0, 0.8)), 2),
    }
    lc_rng = np.random.default_rng(2_000_003 + seed)
    if lc_rng.random() < lane_change_share:
        config["lane_changes"] = {"first_s": round(float(lc_rng.uniform(*LANE_CHANGE_FIRST_S)), 1),
                                  "prefer": "left" if lc_rng.random() < 0.5 else "right",
                                  "seed": int(lc_rng.integers(2**31))}
    return config


def patch_panda3d() -> None:
    """Apply the Panda3D settings that make CPU rendering usable: no multisampling, no render threads."""
    from panda3d.core import loadPrcFileData
    import metadrive.engine.core.engine_core as engine_core

    if getattr(engine_core, "_deead_patched", False):
        return
    original = engine_core.loadPrcFileData

    def filtered(name: str, data: str) -> None:
        key = data.strip().split(" ")[0]
        if key == "threading-model":
            return
        if key in ("framebuffer-multisample", "multisamples"):
            data = f"{key} 0"
        original(name, data)

    engine_core.loadPrcFileData = filtered
    loadPrcFileData("", "framebuffer-multisample 0")
    loadPrcFileData("", "multisamples 0")
    engine_core._deead_patched = True

