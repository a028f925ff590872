"""A short IMU history that gives acceleration and angular velocity at the camera's instant.

Like the odometry (OdometryHistory): the newest sample is up to one IMU period (plus jitter) off the
camera, and live and offline runs would pair differently; interpolating at the camera stamp gives
the same values wherever the frame is planned. `add` runs on a subscription thread, `at` on the
planning thread; the lock guards only the sample list.
"""
from __future__ import annotations

import bisect
import math
import threading
from typing import Any

from deead_ros.errors import BadInputError
from deead_ros.model.encoding import ImuSample

WINDOW_S = 1.0          # samples kept behind the newest
MAX_SAMPLES = 2000      # a 1 kHz IMU's second, with room


def imu_sample(msg: Any) -> tuple[float, ImuSample]:
    """sensor_msgs/Imu -> (stamp s, ImuSample); NaN or inf is bad input. Orientation is not read."""
    a, w = msg.linear_acceleration, msg.angular_velocity
    values = (a.x, a.y, a.z, w.x, w.y, w.z)
    if not all(math.isfinite(v) for v in values):
        raise BadInputError("IMU message has NaN or inf in linear_acceleration or angular_velocity")
    stamp = msg.header.stamp
    return stamp.sec + stamp.nanosec * 1e-9, ImuSample((a.x, a.y, a.z), (w.x, w.y, w.z))


def _mix(a: ImuSample, b: ImuSample, f: float) -> ImuSample:
    def lerp(u: tuple[float, ...], v: tuple[float, ...]) -> tuple[float, float, float]:
        x, y, z = (p + f * (q - p) for p, q in zip(u, v))
        return x, y, z
    return ImuSample(lerp(a.linear_accel_mps2, b.linear_accel_mps2),
                     lerp(a.angular_velocity_rps, b.angular_velocity_rps))


class ImuHistory:
    """IMU samples of the last WINDOW_S seconds in stamp order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamps: list[float] = []
        self._samples: list[ImuSample] = []

    def add(self, stamp_s: float, sample: ImuSample) -> None:
        """Insert in stamp order (a repeated stamp replaces); a stamp more than WINDOW_S before the newest (a
        restarted bag or driver) starts the history afresh."""
        with self._lock:
            if self._stamps and stamp_s < self._stamps[-1] - WINDOW_S:
                self._stamps, self._samples = [], []
            i = bisect.bisect_left(self._stamps, stamp_s)
            if i < len(self._stamps) and self._stamps[i] == stamp_s:
                self._samples[i] = sample
            else:
                self._stamps.insert(i, stamp_s)
                self._samples.insert(i, sample)
            cut = max(bisect.bisect_left(self._stamps, self._stamps[-1] - WINDOW_S), len(self._stamps) - MAX_SAMPLES)
            if cut > 0:
                del self._stamps[:cut], self._samples[:cut]

    def at(self, stamp_s: float, max_gap_s: float) -> ImuSample | str | None:
        """The IMU at stamp_s: interpolated between the samples around it when both are within max_gap_s, else the
        nearer one when it is within max_gap_s; why not (a sentence) when samples exist but none is that near;
        None without any sample (no IMU on this vehicle)."""
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp_s)
            around = [(self._stamps[j], self._samples[j]) for j in (i - 1, i) if 0 <= j < len(self._stamps)]
        near = [(t, s) for t, s in around if abs(t - stamp_s) <= max_gap_s]
        if len(near) == 2 and near[0][0] != near[1][0]:
            (t0, s0), (t1, s1) = near
            return _mix(s0, s1, (stamp_s - t0) / (t1 - t0))
        if near:
            return min(near, key=lambda ts: abs(ts[0] - stamp_s))[1]
        return (f"no IMU sample within io.imu_max_gap_s={max_gap_s:g} s of the camera stamp {stamp_s:.3f} s "
                f"(nearest {min(abs(t - stamp_s) for t, _ in around):.3f} s away)")

    def clear(self) -> None:
        with self._lock:
            self._stamps, self._samples = [], []
