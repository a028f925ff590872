"""Shared test set-up: Hypothesis profiles and the repository paths."""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO_ROOT = Path(__file__).resolve().parents[1]

SMALL_MODEL_LAYERS = 6


@pytest.fixture(scope="session")
def small_model(tmp_path_factory):
    """A 6-layer demo VLA with random weights, exported to per-layer ONNX; returns manifest.json."""
    import torch

    from deead_ros.model.encoding import InputSpec
    from deead_ros.model.export_onnx import export_pretrained
    from deead_ros.model.vla import DeeadVLA, VLAConfig
    from deead_ros.model.weights import save_pretrained
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("small_model")
    weights = save_pretrained(DeeadVLA(VLAConfig(n_layer=SMALL_MODEL_LAYERS)), InputSpec(), root / "weights")
    return export_pretrained(weights, root / "onnx", fused=False, log=lambda _: None)


@pytest.fixture(scope="session")
def fixture_bag(tmp_path_factory):
    """The fixture simulator episode written as an mcap bag (compressed camera)."""
    from deead_ros.tools.make_bag import write_bag
    out = tmp_path_factory.mktemp("bag") / "episode"
    write_bag([REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"], out)
    return out
