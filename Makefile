# make setup: the environment alone; make lint: ruff + mypy; make test: set-up + lint + the whole suite;
# make demo: set-up + the demo (its figures: docs/demo.json); make test-kilted: the same set-up on ROS 2 Kilted in
# build/kilted_venv (requirements-kilted.txt), then the ROS tests there (not part of `make test`).
VENV ?= $(CURDIR)/.venv
KILTED_VENV := $(CURDIR)/build/kilted_venv
PY := $(VENV)/bin/python
export AMENT_PREFIX_PATH := $(VENV)
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
# the localhost profile where Jazzy's Fast DDS 2 reads it (Kilted's Fast DDS 3: FASTDDS_..., as test-kilted sets it;
# deead_ros/ros/dds.py)
export FASTRTPS_DEFAULT_PROFILES_FILE := $(CURDIR)/deead_ros/config/fastdds_localhost_shm.xml

.PHONY: setup lint test test-slow test-kilted demo metadrive closed-loop clean
setup:
	@VENV=$(VENV) bash scripts/setup.sh

lint: setup
	$(PY) -m ruff check deead_ros deead_lab bench test scripts
	$(PY) -m mypy

test: setup lint
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m "slow or not slow"

test-kilted:
	@VENV=$(KILTED_VENV) DISTRO=kilted DEEAD_SKIP_CHROMIUM=1 bash scripts/setup.sh
	env -u FASTRTPS_DEFAULT_PROFILES_FILE FASTDDS_DEFAULT_PROFILES_FILE=$(FASTRTPS_DEFAULT_PROFILES_FILE) \
	  AMENT_PREFIX_PATH=$(KILTED_VENV) $(KILTED_VENV)/bin/python -m pytest -m ros test/ros

demo: setup
	@if [ ! -f deead_ros/models/demo/vla.safetensors ]; then \
	  echo "make demo: the demo model does not exist yet (deead_ros/models/demo/vla.safetensors); train it with deead_train first"; exit 1; fi
	$(PY) -m deead_ros.ros.demo --out docs/demo.json

metadrive:
	@bash scripts/setup_metadrive.sh

closed-loop: setup metadrive
	$(CURDIR)/.venv-metadrive/bin/python bench/closed_loop.py --model $(VENV)/share/deead_ros/models/demo/onnx/manifest.json

clean:
	rm -rf build deead_ros/build deead_ros/*.egg-info deead_lab/build deead_lab/*.egg-info .pytest_cache
