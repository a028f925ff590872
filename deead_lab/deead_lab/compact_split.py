"""deead_compact_split: a committed, smaller copy of a data set split, so the headline tables regenerate anywhere.

The full test split is hundreds of MB (the simulator's raw frames); the open-loop benchmark and
the model report only need scored frames. This keeps every `--every`-th scored frame of each
episode (a full 3 s future and a clean one: `train.episode_frames`' rule), byte for byte, in the
same episode format, under `<out>/<split>/`, and stops adding episodes at `--max-mb`. Frames are
independent inputs (the route, speed and yaw rate are per frame); only the acceleration input,
measured over the recorded frames, would see the gaps, and the shipped model does not use it.

    python -m deead_lab.compact_split --data data/metadrive --split test --every 6 --out bench/test_split
    python -m deead_lab.compact_split --data data/metadrive --split calib --every 12 --random-offset \
        --out bench/calib_split                    # deead_calibrate's drives
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from deead_lab.dataset_format import ARRAY_KEYS, episode_path, load_episode, save_episode


def compact_episode(ep: dict, every: int, random_offset: bool = False) -> dict | None:
    """Every `every`-th scored frame of an episode (None if it has none), with the choice stated in its meta.

    random_offset: start at a scored frame drawn from the map seed (not the first), so that a drive's share
    of frames with some property is an unbiased estimate of its share over every frame (deead_calibrate's
    per-drive risk), not the share at fixed times after the start.
    """
    offset = int(np.random.default_rng(int(ep["map_seed"])).integers(every)) if random_offset else 0
    scored = np.nonzero(ep["has_full_future"] & ep["future_clean"])[0][offset::every]
    if len(scored) == 0:
        return None
    out = {k: np.asarray(ep[k])[scored] for k in ARRAY_KEYS}
    meta = dict(ep["meta"], compact={"every": every, "offset": offset, "frames_of": int(len(ep["pose"])),
                                     "frame_index": scored.tolist()})
    return {**out, "map_seed": ep["map_seed"], "meta": json.dumps(meta, sort_keys=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_compact_split", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/metadrive"), help="collector output")
    parser.add_argument("--split", default="test")
    parser.add_argument("--every", type=int, default=6, help="keep every N-th scored frame")
    parser.add_argument("--random-offset", action="store_true",
                        help="start each episode at a frame drawn from its map seed (calibration: unbiased per-drive "
                             "shares)")
    parser.add_argument("--max-mb", type=float, default=30.0, help="stop adding episodes at this size")
    parser.add_argument("--out", type=Path, default=Path("bench/test_split"))
    args = parser.parse_args(argv)
    files = sorted((args.data / args.split).glob("ep_*.npz"))
    if not files:
        print(f"deead_compact_split: no episodes under {args.data / args.split}; collect them first "
              "(python -m deead_lab.collect_metadrive)", file=sys.stderr)
        return 2
    total, frames, kept = 0, 0, 0
    for path in files:
        small = compact_episode(load_episode(path), args.every, args.random_offset)
        if small is None:
            continue
        target = episode_path(args.out, args.split, small["map_seed"])
        save_episode(target, small)
        size = target.stat().st_size
        if (total + size) / 1e6 > args.max_mb:
            target.unlink()
            print(f"[compact] stopped at {args.max_mb:g} MB: {len(files) - kept} episodes left out", flush=True)
            break
        total, frames, kept = total + size, frames + len(small["pose"]), kept + 1
    print(f"[compact] {kept} episodes, {frames} frames, {total / 1e6:.1f} MB in {args.out / args.split}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
