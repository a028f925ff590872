#!/usr/bin/env bash
# One idempotent set-up of the main environment: .venv with ROS 2 Jazzy wheels and the pinned
# requirements, the lint tools (requirements-dev.txt, requirements-stubs.txt, and the TensorRT stubs
# made parseable in build/stubs), the deead_ros_msgs interfaces built with CMake into the venv,
# the runtime deead_ros and the lab deead_lab installed (non-editable, so their share/ files exist),
# and the demo model exported to per-layer ONNX (deead_export, from the lab).
# DISTRO=kilted (make test-kilted, with VENV=build/kilted_venv) sets up the same on ROS 2 Kilted: its
# requirements are requirements-kilted.txt (and -runtime-kilted), its messages build in build/deead_ros_msgs-kilted.
# Each step is skipped when the hash of its inputs matches the last run: a second run takes seconds.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
DISTRO=${DISTRO:-jazzy}
SUFFIX=$([ "$DISTRO" = jazzy ] || echo "-$DISTRO")   # Jazzy's files carry no distro name (the default environment)
REQUIREMENTS="requirements$SUFFIX.txt requirements-runtime$SUFFIX.txt requirements-lab.txt"
[ -f "$ROOT/requirements$SUFFIX.txt" ] || { echo "no requirements$SUFFIX.txt: DISTRO is jazzy or kilted"; exit 1; }
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
STAMPS="$VENV/.deead_stamps"
SECONDS=0

log() { printf '[setup %3ds] %s\n' "$SECONDS" "$*"; }
inputs_hash() { (cd "$ROOT" && cat "$@" 2>/dev/null | sha256sum | cut -c1-16); }
up_to_date() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_done() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi

h=$(inputs_hash $REQUIREMENTS)
if ! up_to_date requirements "$h"; then
  log "installing pinned requirements (ROS 2 $DISTRO wheels, torch CPU, onnxruntime, rosbags, ...)"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$ROOT/requirements$SUFFIX.txt"
  mark_done requirements "$h"
fi

h=$(inputs_hash requirements-dev.txt requirements-stubs.txt scripts/tensorrt_stubs.py)
if ! up_to_date lint "$h" || [ ! -f "$ROOT/build/stubs/tensorrt/__init__.pyi" ]; then
  log "installing the lint tools (ruff, mypy, type stubs; tensorrt-stubs without its NVIDIA dependencies)"
  "$VENV/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
  "$VENV/bin/pip" install -q --no-deps -r "$ROOT/requirements-stubs.txt"
  "$VENV/bin/python" "$ROOT/scripts/tensorrt_stubs.py" "$ROOT/build/stubs"
  mark_done lint "$h"
fi

h=$(inputs_hash $REQUIREMENTS deead_ros_msgs/msg/*.msg deead_ros_msgs/CMakeLists.txt deead_ros_msgs/cmake/*.cmake deead_ros_msgs/package.xml)
if ! up_to_date interfaces "$h"; then
  log "building deead_ros_msgs (rosidl, CMake) into $VENV"
  BUILD="build/deead_ros_msgs$SUFFIX"
  rm -rf "${ROOT:?}/$BUILD"; mkdir -p "$ROOT/build"
  export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV"
  cmake -S "$ROOT/deead_ros_msgs" -B "$ROOT/$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" > "$ROOT/$BUILD.configure.log" 2>&1 \
    || { echo "interface configure failed: see $BUILD.configure.log"; exit 1; }
  cmake --build "$ROOT/$BUILD" -j"$(nproc)" > "$ROOT/$BUILD.build.log" 2>&1 \
    || { echo "interface build failed: see $BUILD.build.log"; exit 1; }
  cmake --install "$ROOT/$BUILD" > /dev/null
  mark_done interfaces "$h"
fi

# install_package STAMP FOLDER WHAT: pip-install one of the repository's Python packages (non-editable, so its
# share/ files exist) when its files changed, leaving no build folder behind.
install_package() {
  local h
  h=$(inputs_hash $(cd "$ROOT" && git ls-files -co --exclude-standard "$2" | sort))
  if ! up_to_date "$1" "$h"; then
    log "installing $2 ($3) into $VENV"
    rm -rf "$ROOT/$2/build" "$ROOT/$2"/*.egg-info
    "$VENV/bin/pip" install -q --no-deps --no-build-isolation --force-reinstall "$ROOT/$2"
    rm -rf "$ROOT/$2/build" "$ROOT/$2"/*.egg-info
    mark_done "$1" "$h"
  fi
}
install_package package deead_ros "the runtime"
install_package lab deead_lab "the workstation's tools"

if [ -f "$ROOT/deead_ros/models/demo/vla.safetensors" ]; then
  h=$(inputs_hash deead_ros/models/demo/vla.safetensors deead_ros/models/demo/config.json deead_ros/deead_ros/model/*.py deead_lab/deead_lab/model/*.py deead_ros/deead_ros/engines/*.py)
  if ! up_to_date export "$h"; then
    log "exporting the demo model to per-layer ONNX (share/deead_ros/models/demo/onnx)"
    "$VENV/bin/deead_export" --weights "$ROOT/deead_ros/models/demo/vla.safetensors" \
      --out "$VENV/share/deead_ros/models/demo/onnx"
    mark_done export "$h"
  fi
fi

# Optional: Debian's Chromium, for the report page's browser test (it skips, saying why, without it).
# Tried once per venv (remove $STAMPS/chromium to try again), only as root with apt-get; set
# DEEAD_SKIP_CHROMIUM=1 to never try. A failure here never fails the set-up.
if [ ! -x /usr/bin/chromium ] && [ "${DEEAD_SKIP_CHROMIUM:-0}" != 1 ] && ! up_to_date chromium tried; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    log "installing Debian's chromium (optional: the report page's browser test)"
    mkdir -p "$ROOT/build"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      chromium fonts-liberation) > "$ROOT/build/chromium.install.log" 2>&1 \
      || log "chromium not installed (see build/chromium.install.log): the browser test will skip"
  else
    log "chromium not installed (needs root and apt-get): the browser test will skip"
  fi
  mark_done chromium tried
fi
log "environment ready: $VENV"
