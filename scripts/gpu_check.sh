#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: the GPU tests and the GPU benchmarks, in a venv of its own.
#
#   bash scripts/gpu_check.sh
#
# With a GPU (nvidia-smi lists one): creates build/gpu_venv (with the system's site-packages, so that a
# machine's CUDA torch, onnx and cuda-python are used as they are), installs what is missing from PyPI
# (scripts/gpu_requirements.txt: onnxruntime-gpu for ONNX Runtime's CUDA provider, cuda-python; TensorRT only
# where it is already installed: its PyPI packages fetch the libraries from NVIDIA's own index), or from a
# folder of wheels on a machine without network (GPU_CHECK_WHEELS=DIR), runs `pytest -m gpu test/gpu`, then
# bench/bench_gpu.py, which writes docs/gpu.json (GPU name, driver and CUDA versions, per backend: chain vs
# fused graph, one check in layers, deead at the recommended delta vs full depth, p50 and p95).
# Without a GPU: the host-side checks only (the GPU tests' input building on the CPU, TensorRT plan cache
# keys and rebuild decisions, the TensorRT versions accepted and refused, the fp16 graphs for TensorRT 11,
# the GPU tests collected and skipped with their reasons), in the project's .venv (make setup), and a last
# line {"gpu": false, "host_checks": "passed", ...}; exit 0 when they pass.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SECONDS=0
export PYTHONPATH="$ROOT/deead_ros:$ROOT/deead_lab${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
HOST_TESTS=(test/unit/test_gpu_host_checks.py test/unit/test_engines_trt_cache.py test/gpu)

# The last line: one JSON object, from the pytest summary line in $1 and the fields given as name=value.
json_line() {
  local summary=$1; shift
  python3 - "$summary" "$SECONDS" "$@" <<'EOF'
import json, re, sys
summary, seconds, fields = sys.argv[1], int(sys.argv[2]), dict(a.split("=", 1) for a in sys.argv[3:])
counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
out = {k: (v == "true" if v in ("true", "false") else v) for k, v in fields.items()}
print(json.dumps({**out, "tests": counts, "seconds": seconds}))
EOF
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
  PY="$ROOT/.venv/bin/python"
  [ -x "$PY" ] || { echo "gpu_check: no GPU, and no .venv for the host checks: run 'make setup' first" >&2; exit 2; }
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none): host-side checks only"
  log=$(mktemp)
  nice -n 10 "$PY" -m pytest -q -rs -p no:cacheprovider "${HOST_TESTS[@]}" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  summary=$(tail -n 1 "$log"); rm -f "$log"
  if [ "$rc" -ne 0 ]; then
    json_line "$summary" gpu=false host_checks=failed
    exit 1
  fi
  json_line "$summary" gpu=false host_checks=passed reason="no NVIDIA GPU (nvidia-smi lists none)"
  exit 0
fi

VENV="$ROOT/build/gpu_venv"
echo "gpu_check: $(nvidia-smi -L | head -n 1)"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV" || exit 2
if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  "$VENV/bin/pip" install -q --no-index --find-links "$GPU_CHECK_WHEELS" -r scripts/gpu_requirements.txt \
    || echo "gpu_check: not every requirement is in $GPU_CHECK_WHEELS; going on with what is installed"
else
  "$VENV/bin/pip" install -q -r scripts/gpu_requirements.txt \
    || echo "gpu_check: PyPI is not reachable or a requirement failed; going on with what is installed"
fi
"$VENV/bin/python" - <<'EOF'
import importlib.util
for module, why in [("torch", "export and the torch reference"), ("onnx", "export"), ("onnxruntime", "the chain"),
                    ("tensorrt", "backend tensorrt"), ("cuda.bindings", "backend tensorrt's CUDA calls")]:
    found = importlib.util.find_spec(module.split(".")[0]) is not None
    print(f"gpu_check: {module:14s} {'found' if found else 'MISSING'} ({why})")
import onnxruntime
print(f"gpu_check: onnxruntime {onnxruntime.__version__} providers {onnxruntime.get_available_providers()}")
EOF
log=$(mktemp)
"$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider -m gpu test/gpu 2>&1 | tee "$log"
tests_rc=${PIPESTATUS[0]}
summary=$(tail -n 1 "$log"); rm -f "$log"
"$VENV/bin/python" bench/bench_gpu.py --out docs/gpu.json
bench_rc=$?
json_line "$summary" gpu=true gpu_tests="$([ "$tests_rc" -eq 0 ] && echo passed || echo failed)" \
  bench="$([ "$bench_rc" -eq 0 ] && echo docs/gpu.json || echo failed)"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
