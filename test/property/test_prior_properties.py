"""Properties of the route prior on arbitrary polylines."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from deead_ros.exit.prior import route_prior
from deead_ros.geometry import to_ego_frame
from test.strategies import polylines

TIMES = np.arange(1, 7) * 0.5


@given(polylines(), st.floats(-5, 40), st.floats(0.0, 3.0))
def test_prior_is_finite_or_explained(route, speed, min_speed):
    prior = route_prior(route, speed, TIMES, min_speed_mps=min_speed, max_offset_m=500.0)
    if prior.trajectory_m is None:
        assert prior.detail, "an empty prior must say why"
    else:
        assert prior.trajectory_m.shape == (6, 2) and np.isfinite(prior.trajectory_m).all()
        step = np.linalg.norm(np.diff(np.vstack([prior.trajectory_m]), axis=0), axis=1)
        assert np.all(step <= max(speed, min_speed) * 0.5 + 1e-3), "points never further apart than v * dt"


@given(st.floats(-100, 100), st.floats(-100, 100), st.floats(-np.pi, np.pi))
def test_ego_frame_round_trip(x, y, yaw):
    world = np.array([[x + 3.0, y - 2.0], [x - 7.5, y + 1.0]])
    ego = to_ego_frame(world, x, y, yaw)
    c, s = np.cos(yaw), np.sin(yaw)
    back = np.stack([c * ego[:, 0] - s * ego[:, 1] + x, s * ego[:, 0] + c * ego[:, 1] + y], axis=1)
    np.testing.assert_allclose(back, world, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ego, axis=1), np.linalg.norm(world - [x, y], axis=1), atol=1e-6)
