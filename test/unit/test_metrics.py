"""Trajectory metrics in metres."""
import numpy as np
import pytest

from deead_ros.exit.metrics import l2_at_m, mean_deviation_m, steps_within


def test_metrics_on_a_known_offset():
    ref = np.stack([np.arange(1, 7) * 5.0, np.zeros(6)], axis=1)
    pred = ref + np.array([[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [0, 5]], float)
    assert l2_at_m(pred, ref, 0.5, 1.0) == pytest.approx(0.5)      # mean over the first two waypoints
    assert l2_at_m(pred, ref, 0.5, 3.0) == pytest.approx(2.5)
    assert mean_deviation_m(pred, ref, steps_within(2.0, 0.5, 6)) == pytest.approx(1.5)


def test_steps_within_clamps():
    assert steps_within(0.1, 0.5, 6) == 1 and steps_within(10.0, 0.5, 6) == 6


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        l2_at_m(np.zeros((6, 2)), np.zeros((5, 2)), 0.5, 3.0)
