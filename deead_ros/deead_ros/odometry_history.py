"""A short odometry history that gives the ego state at the camera's instant.

Why: pairing a camera frame with the newest odometry puts the ego up to one odometry period (plus
transport jitter) off, and live and offline runs would pair differently. Interpolating at the
camera stamp makes the pose, the route transform and the prior the same wherever the frame is
planned. `add` runs on a subscription thread and `at` on the planning thread: each public method
holds the lock only to read or change the sample list; the maths runs outside it.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, replace

from deead_ros.errors import ConfigError
from deead_ros.geometry import wrap_angle
from deead_ros.model.encoding import acceleration_at


@dataclass(frozen=True, slots=True)
class EgoState:
    """The ego pose in the odometry frame, and its motion."""

    x: float
    y: float
    yaw: float
    speed_mps: float
    yaw_rate_rps: float
    frame_id: str
    stamp_s: float
    accel_mps2: float = 0.0       # speed change over the model's window (OdometryHistory.acceleration_at)


JUMP_SLACK_M = 1.0      # a pose may move this much more than max_jump_speed_mps allows (noise, re-localisation)


def interpolate(a: EgoState, b: EgoState, stamp_s: float) -> EgoState:
    """Linear in time between a and b (a.stamp_s < b.stamp_s); yaw along the shorter way round."""
    f = (stamp_s - a.stamp_s) / (b.stamp_s - a.stamp_s)
    return EgoState(a.x + f * (b.x - a.x), a.y + f * (b.y - a.y), wrap_angle(a.yaw + f * wrap_angle(b.yaw - a.yaw)),
                    a.speed_mps + f * (b.speed_mps - a.speed_mps),
                    a.yaw_rate_rps + f * (b.yaw_rate_rps - a.yaw_rate_rps), a.frame_id, stamp_s,
                    a.accel_mps2 + f * (b.accel_mps2 - a.accel_mps2))


def extrapolate(state: EgoState, stamp_s: float) -> EgoState:
    """Roll the state to stamp_s (before or after) at constant speed and yaw rate (CTRV)."""
    dt = stamp_s - state.stamp_s
    v, w, yaw = state.speed_mps, state.yaw_rate_rps, state.yaw
    if abs(w * dt) < 1e-6:
        dx, dy = v * dt * math.cos(yaw), v * dt * math.sin(yaw)
    else:
        dx = v / w * (math.sin(yaw + w * dt) - math.sin(yaw))
        dy = v / w * (math.cos(yaw) - math.cos(yaw + w * dt))
    return replace(state, x=state.x + dx, y=state.y + dy, yaw=wrap_angle(yaw + w * dt), stamp_s=stamp_s)


class OdometryHistory:
    """Odometry samples of the last `window_s` seconds in stamp order (at most `max_samples`)."""

    def __init__(self, window_s: float = 2.0, max_samples: int = 400, max_jump_speed_mps: float = 80.0) -> None:
        for name, value in (("window_s", window_s), ("max_samples", max_samples),
                            ("max_jump_speed_mps", max_jump_speed_mps)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"odometry history {name}={value} must be finite and > 0")
        self.window_s = float(window_s)
        self.max_samples = int(max_samples)
        self.max_jump_speed_mps = float(max_jump_speed_mps)
        self._lock = threading.Lock()
        self._samples: list[EgoState] = []     # sorted by stamp_s; replaced, never mutated in place
        self._stamps: list[float] = []         # the same stamps, for bisect

    def add(self, state: EgoState) -> str | None:
        """Insert a sample in stamp order; return None, or why the history was reset or the sample ignored.

        Out-of-order samples are inserted where they belong and a repeated stamp replaces the sample.
        A pose jump faster than max_jump_speed_mps (+ 1 m) from a time-neighbour, a different
        frame_id, or a stamp more than window_s before the newest (a restarted bag or driver) resets
        the history to this one sample.
        """
        if not all(math.isfinite(v) for v in (state.x, state.y, state.yaw, state.speed_mps, state.yaw_rate_rps,
                                                state.stamp_s, state.accel_mps2)):
            return f"odometry sample at {state.stamp_s} s has NaN or inf; ignored"
        with self._lock:
            reason = self._reset_reason(state)
            if reason is not None:
                self._samples, self._stamps = [state], [state.stamp_s]
                return reason
            i = bisect.bisect_left(self._stamps, state.stamp_s)
            if i < len(self._stamps) and self._stamps[i] == state.stamp_s:
                self._samples[i] = state
            else:
                self._samples.insert(i, state)
                self._stamps.insert(i, state.stamp_s)
            cut = max(bisect.bisect_left(self._stamps, self._stamps[-1] - self.window_s),
                      len(self._stamps) - self.max_samples)
            if cut > 0:
                del self._samples[:cut], self._stamps[:cut]
        return None

    def _reset_reason(self, state: EgoState) -> str | None:
        """Why `state` cannot join the samples (caller holds the lock), or None."""
        if not self._samples:
            return None
        newest = self._samples[-1]
        if state.stamp_s < newest.stamp_s - self.window_s:
            return (f"odometry stamp went back {newest.stamp_s - state.stamp_s:.3f} s (> window {self.window_s:g} s; "
                    "a restarted bag or driver?); odometry history reset")
        i = bisect.bisect_left(self._stamps, state.stamp_s)
        same = i < len(self._stamps) and self._stamps[i] == state.stamp_s
        neighbours = self._samples[max(i - 1, 0):i] + self._samples[i + 1 if same else i:][:1]
        for other in neighbours:
            if other.frame_id != state.frame_id:
                return (f"odometry frame changed from '{other.frame_id}' to '{state.frame_id}'; "
                        "odometry history reset")
            dt = abs(state.stamp_s - other.stamp_s)
            distance = math.hypot(state.x - other.x, state.y - other.y)
            if distance > self.max_jump_speed_mps * dt + JUMP_SLACK_M:
                return (f"odometry pose jumped {distance:.1f} m in {dt:.3f} s (> {self.max_jump_speed_mps:g} m/s "
                        f"+ {JUMP_SLACK_M:g} m; re-localised?); odometry history reset")
        return None

    def at(self, stamp_s: float, max_gap_s: float, max_extrapolation_s: float) -> EgoState | str:
        """The ego state at stamp_s, or why there is none (a sentence for the drop counter's log line).

        Interpolates between the samples around the stamp when both are within max_gap_s of it;
        extrapolates (CTRV) from the newest sample forwards, or from the oldest backwards (a camera
        frame just before the first odometry), by at most max_extrapolation_s. Nothing else.
        """
        if not math.isfinite(stamp_s):
            return f"camera stamp {stamp_s} is not finite"
        with self._lock:
            if not self._samples:
                return "no odometry received yet"
            i = bisect.bisect_left(self._stamps, stamp_s)
            before = self._samples[i - 1] if i > 0 else None
            after = self._samples[i] if i < len(self._samples) else None
            oldest, newest = self._samples[0], self._samples[-1]
        if after is not None and after.stamp_s == stamp_s:
            return after
        if before is not None and after is not None:
            if stamp_s - before.stamp_s <= max_gap_s and after.stamp_s - stamp_s <= max_gap_s:
                return interpolate(before, after, stamp_s)
            return (f"no odometry within {max_gap_s:g} s on both sides of the camera stamp {stamp_s:.3f} s "
                    f"(previous {before.stamp_s:.3f} s, next {after.stamp_s:.3f} s); odometry dropped out?")
        if before is not None:
            gap = stamp_s - newest.stamp_s
            if gap <= max_extrapolation_s:
                return extrapolate(newest, stamp_s)
            return (f"no odometry within {max_extrapolation_s:g} s of the camera stamp {stamp_s:.3f} s "
                    f"(newest {newest.stamp_s:.3f} s, {gap:.3f} s before)")
        gap = oldest.stamp_s - stamp_s
        if gap <= max_extrapolation_s:
            return extrapolate(oldest, stamp_s)
        return (f"no odometry within {max_extrapolation_s:g} s of the camera stamp {stamp_s:.3f} s "
                f"(oldest {oldest.stamp_s:.3f} s, {gap:.3f} s after; the history keeps {self.window_s:g} s)")

    def acceleration_at(self, stamp_s: float, window_s: float) -> float:
        """The speed change over the window_s before stamp_s, per second (model.encoding.acceleration_at, the
        trainer's formula), from the samples held, whatever order they arrived in."""
        with self._lock:
            stamps = list(self._stamps)
            speeds = [s.speed_mps for s in self._samples]
        return acceleration_at(stamps, speeds, stamp_s, window_s)

    def nearest_gap_s(self, stamp_s: float) -> float:
        """How far (s) the nearest sample is from stamp_s; inf when empty."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_s)
            near = self._stamps[max(i - 1, 0):i + 1]
        return min((abs(stamp_s - t) for t in near), default=math.inf)

    def newest(self) -> EgoState | None:
        """The newest sample, or None when empty."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def has_after(self, stamp_s: float, within_s: float = math.inf) -> bool:
        """Whether a sample stamped in [stamp_s, stamp_s + within_s] has arrived (so `at(stamp_s)` can
        interpolate instead of extrapolating forwards). With within_s = the interpolation's max gap, the
        samples of a stream that has since restarted back in time (a looping bag) do not count."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_s)
            return i < len(self._stamps) and self._stamps[i] <= stamp_s + within_s

    def clear(self) -> None:
        """Forget every sample (a bag restarted, or the node was reset)."""
        with self._lock:
            self._samples, self._stamps = [], []

    def __len__(self) -> int:
        with self._lock:
            return len(self._samples)
