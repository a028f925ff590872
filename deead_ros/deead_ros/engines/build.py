"""deead_build_engines: build (or verify) the TensorRT plans of an exported model, then exit.

The same cache the node uses at start-up, filled ahead of time (Autoware's `build_only`): run it once
per vehicle after deead_export or a TensorRT/driver update, so the node never builds while planning.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deead_ros.engines.manifest import load_manifest
from deead_ros.engines.protocol import PRECISIONS
from deead_ros.errors import DeeadError
from deead_ros.parameters import default
from deead_ros.paths import demo_manifest_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_build_engines", description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=None,
                        help="manifest.json written by deead_export (default: the installed demo model)")
    parser.add_argument("--precision", choices=PRECISIONS, default=default("precision"),
                        help="engine precision; build the one the node loads (default: %(default)s, as the node)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="plan cache directory (default: <manifest dir>/trt_cache, as the node uses)")
    parser.add_argument("--force-engine-update", action="store_true", help="rebuild even when the cache matches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        from deead_ros.engines.trt_engine import build_plans       # imports no tensorrt until called
        manifest = load_manifest(args.manifest or demo_manifest_path())
        cache_dir = args.cache_dir or manifest.path.parent / "trt_cache"
        plans = build_plans(manifest, precision=args.precision, cache_dir=cache_dir,
                            force_engine_update=args.force_engine_update)
    except DeeadError as err:
        print(f"deead_build_engines: error: {err}", file=sys.stderr)
        return 2
    print(f"{len(plans)} TensorRT plans ready in {cache_dir} ({args.precision})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
