"""The tracker: pure-pursuit steering and a proportional speed controller that follow a planned trajectory."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deead_ros.geometry import arc_lengths, sample_at_arc_lengths



@dataclass(frozen=True)
class PurePursuit:
    """Steering and throttle that track a planned trajectory in the ego frame (x forward, y left).

    Why pure pursuit: it follows the planned path geometrically and adds no behaviour of its own,
    so what the closed loop measures is the plan. The target speed is the plan's speed around
    `speed_lookahead_s` (ahead of now, to make up for the car's response time), so a plan that
    speeds up makes the car speed up and a plan that stops makes it brake.
    """

    wheelbase_m: float = 2.47              # MetaDrive's default vehicle (1.05 m front + 1.42 m rear)
    max_steering_deg: float = 40.0         # MetaDrive's vehicle_config max_steering
    lookahead_s: float = 0.8
    min_lookahead_m: float = 3.0
    speed_gain: float = 0.4                # throttle per m/s of speed error
    speed_lookahead_s: float = 1.5
    dt_s: float = 0.5                      # the plan's time step

    @staticmethod
    def _path(trajectory_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The plan from the ego's position (the origin) and its arc length at each point."""
        path = np.vstack([np.zeros((1, 2)), np.asarray(trajectory_m, dtype=np.float64)])
        return path, arc_lengths(path)

    def _speed(self, arc: np.ndarray) -> float:
        k = int(np.clip(round(self.speed_lookahead_s / self.dt_s), 1, len(arc) - 1))
        return float(arc[k] - arc[k - 1]) / self.dt_s

    def target_speed(self, trajectory_m: np.ndarray) -> float:
        """The plan's speed over the step that ends nearest `speed_lookahead_s`, m/s."""
        return self._speed(self._path(trajectory_m)[1])

    def action(self, trajectory_m: np.ndarray, speed_mps: float) -> tuple[float, float]:
        """[steering, throttle] in MetaDrive's [-1, 1] (positive steering turns left)."""
        path, arc = self._path(trajectory_m)
        throttle = float(np.clip(self.speed_gain * (self._speed(arc) - speed_mps), -1.0, 1.0))
        if arc[-1] < 0.5:                                   # a plan that stays put: hold the wheel straight
            return 0.0, throttle
        lookahead = max(self.min_lookahead_m, speed_mps * self.lookahead_s)
        x, y = sample_at_arc_lengths(path, [min(lookahead, arc[-1])])[0]
        distance_sq = max(x * x + y * y, 1e-6)
        steer_rad = math.atan(self.wheelbase_m * 2.0 * y / distance_sq)
        return float(np.clip(math.degrees(steer_rad) / self.max_steering_deg, -1.0, 1.0)), throttle
