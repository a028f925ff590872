#!/usr/bin/env bash
# Create .venv-metadrive: a separate Python venv holding MetaDrive 0.2.6.0 and its old pins.
#
# MetaDrive 0.2.6.0 is the only release whose wheel ships its render assets (no download at first
# run) and it needs numpy 1.23 / gym 0.23, which clash with the main environment; hence its own venv.
# Idempotent: a stamp file records the pinned set; when it matches, the script exits in seconds.
#
# Usage: scripts/setup_metadrive.sh [VENV_DIR]     (default: <repo>/.venv-metadrive)
# Env:   PYTHON=python3.11 to choose the interpreter.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-${REPO_ROOT}/.venv-metadrive}"
PYTHON="${PYTHON:-python3}"

METADRIVE_PIN="metadrive-simulator==0.2.6.0"
DEPS=(
  gym==0.23.1 numpy==1.23.5 panda3d==1.10.13 panda3d-gltf==0.13 panda3d-simplepbr==0.10
  opencv-python-headless==4.10.0.84 pandas==2.0.3 matplotlib==3.8.4 scipy==1.11.4
  pygame tqdm yapf seaborn pillow lxml pytest protobuf==3.20.3
)
# The closed loop (bench/closed_loop.py) plans with the project's runner inside this venv. onnxruntime
# declares protobuf>=4 for its model tools, which breaks MetaDrive's generated code; its runtime
# imports fine with protobuf 3.20, so it goes in without its declared dependencies.
RUNTIME=(onnxruntime==1.32.0 flatbuffers==25.12.19)
# The closed loop's episodes as Ray actors (bench/closed_loop.py --ray / --ray-address); ray 2.60 keeps
# numpy 1.23 and protobuf 3.20 (checked by the import below).
SCALE_OUT=(ray==2.60.0)
STAMP="${VENV}/.deead_metadrive_stamp"
WANT="$("${PYTHON}" -c 'import sys; print(".".join(map(str, sys.version_info[:2])))') ${METADRIVE_PIN} ${DEPS[*]} ${RUNTIME[*]} ${SCALE_OUT[*]}"

if [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" && -x "${VENV}/bin/python" ]]; then
  echo "[setup_metadrive] ${VENV} is up to date (stamp matches); nothing to do."
  exit 0
fi

if [[ ! -x "${VENV}/bin/python" ]]; then
  echo "[setup_metadrive] creating venv ${VENV} with ${PYTHON}"
  "${PYTHON}" -m venv "${VENV}"
fi
PIP=("${VENV}/bin/python" -m pip --disable-pip-version-check)

echo "[setup_metadrive] upgrading pip/setuptools/wheel"
"${PIP[@]}" install -q --upgrade pip "setuptools<70" wheel

echo "[setup_metadrive] installing ${METADRIVE_PIN} (--no-deps: its declared deps are too loose)"
"${PIP[@]}" install -q --no-deps "${METADRIVE_PIN}"

echo "[setup_metadrive] installing pinned deps: ${DEPS[*]}"
"${PIP[@]}" install -q "${DEPS[@]}"

echo "[setup_metadrive] installing ${RUNTIME[*]} (--no-deps: see above)"
"${PIP[@]}" install -q --no-deps "${RUNTIME[@]}"

echo "[setup_metadrive] installing ${SCALE_OUT[*]}"
"${PIP[@]}" install -q "${SCALE_OUT[@]}"

echo "[setup_metadrive] checking the import"
"${VENV}/bin/python" - <<'PY'
import numpy, metadrive, panda3d, onnxruntime, ray
from google import protobuf
from metadrive.envs.metadrive_env import MetaDriveEnv
assert numpy.__version__ == "1.23.5" and protobuf.__version__ == "3.20.3", (numpy.__version__, protobuf.__version__)
print(f"[setup_metadrive] numpy {numpy.__version__}, onnxruntime {onnxruntime.__version__}, ray {ray.__version__}, "
      f"metadrive from {metadrive.__file__}")
PY

echo "${WANT}" > "${STAMP}"
echo "[setup_metadrive] done: ${VENV}"
