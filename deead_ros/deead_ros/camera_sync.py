"""Several cameras: one set of images per instant, and each camera's calibration.

Sets are made in the spirit of message_filters' approximate-time policy.

A set is complete when every camera has sent an image stamped within `tolerance_s` of the set's
first image. Complete sets go on at once (the node's one-slot mailbox: latest set wins); nothing
waits behind the model. A set that cannot be completed is dropped with a reason and counted,
never queued: when a newer set completes, every older incomplete set is dropped (its missing
cameras named); at most `max_pending` instants are open at a time; an image older than the newest
set already handed on is dropped as late, unless it is more than RESTART_S older (a looping bag or a
restarted driver): then the open sets are forgotten and sets start again from it. Pure Python: the
node feeds it from its subscription callbacks and tests feed it directly.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from deead_ros.errors import BadInputError, ConfigError

MAX_PENDING = 3          # open instants: a camera may run this many frames ahead of the slowest one
RESTART_S = 1.0          # an image this far before the newest set is a restarted stream (a looping bag), not late


@dataclass(frozen=True, slots=True)
class CameraSet:
    """One instant's images, in the order of the cameras given to CameraSync."""

    stamp_s: float                        # the first camera's stamp: the frame's instant
    messages: tuple[tuple[str, Any], ...]  # (camera, message)


@dataclass(frozen=True, slots=True)
class Dropped:
    """An incomplete set or a late image, and why (the node counts it as incomplete_set)."""

    stamp_s: float
    reason: str


@dataclass(slots=True)
class _Pending:
    anchor_s: float
    messages: dict[str, tuple[float, Any]] = field(default_factory=dict)


class CameraSync:
    """Assembles sets of one image per camera; thread-safe (subscription callbacks may run concurrently)."""

    def __init__(self, cameras: Sequence[str], tolerance_s: float | Callable[[], float],
                 max_pending: int = MAX_PENDING) -> None:
        """tolerance_s: seconds, or where to read them at each image (the node's current settings snapshot)."""
        if not cameras or len(set(cameras)) != len(cameras):
            raise ConfigError(f"cameras {list(cameras)} must name at least one camera, each once")
        self.cameras = tuple(cameras)
        self._tolerance_s = tolerance_s
        self.max_pending = max_pending
        self._pending: list[_Pending] = []      # oldest first
        self._newest_s = float("-inf")           # the newest set handed on
        self._lock = threading.Lock()

    @property
    def tolerance_s(self) -> float:
        return self._tolerance_s() if callable(self._tolerance_s) else self._tolerance_s

    def add(self, camera: str, stamp_s: float, msg: Any) -> tuple[CameraSet | None, list[Dropped]]:
        """File one camera's image; return the set it completed (or None) and what was dropped meanwhile."""
        if camera not in self.cameras:
            raise ValueError(f"camera '{camera}' is not one of {list(self.cameras)}")
        tolerance_s = self.tolerance_s                   # read once per image
        with self._lock:
            dropped: list[Dropped] = []
            if stamp_s < self._newest_s - RESTART_S:
                dropped = [self._incomplete(p, "the cameras' stream restarted") for p in self._pending]
                self._pending.clear()
                self._newest_s = float("-inf")
            if stamp_s < self._newest_s - tolerance_s:
                return None, [Dropped(stamp_s, f"camera '{camera}' image at {stamp_s:.3f} s arrived after the set at "
                                                f"{self._newest_s:.3f} s was complete (late, or its clock is behind)")]
            pending = self._joinable(camera, stamp_s, tolerance_s)
            if pending is None:
                if stamp_s <= self._newest_s:            # within the tolerance of the newest set, which it already has
                    return None, dropped + [Dropped(stamp_s, f"camera '{camera}' sent a second image for the set at "
                                                    f"{self._newest_s:.3f} s (stamped {stamp_s:.3f} s)")]
                pending = _Pending(stamp_s)
                self._pending.append(pending)
                self._pending.sort(key=lambda p: p.anchor_s)
                while len(self._pending) > self.max_pending:
                    dropped.append(self._incomplete(self._pending.pop(0), "too many instants open at once"))
            pending.messages[camera] = (stamp_s, msg)
            if len(pending.messages) < len(self.cameras):
                return None, dropped
            index = self._pending.index(pending)
            dropped += [self._incomplete(p, f"a newer set (at {pending.anchor_s:.3f} s) completed first")
                        for p in self._pending[:index]]
            del self._pending[:index + 1]
            self._newest_s = pending.anchor_s
        first_s = pending.messages[self.cameras[0]][0]
        return CameraSet(first_s, tuple((c, pending.messages[c][1]) for c in self.cameras)), dropped

    def _joinable(self, camera: str, stamp_s: float, tolerance_s: float) -> _Pending | None:
        """The open set nearest in time that this image fits (within tolerance, camera not yet in it)."""
        fits = [p for p in self._pending if abs(stamp_s - p.anchor_s) <= tolerance_s and camera not in p.messages]
        return min(fits, key=lambda p: abs(stamp_s - p.anchor_s), default=None)

    def _incomplete(self, pending: _Pending, why: str) -> Dropped:
        missing = [c for c in self.cameras if c not in pending.messages]
        return Dropped(pending.anchor_s, f"camera set at {pending.anchor_s:.3f} s incomplete (missing "
                                         f"{', '.join(missing)}; none within io.camera_sync_tolerance_s="
                                         f"{self.tolerance_s:g} s): {why}")

    def clear(self) -> None:
        """Forget open sets and the newest stamp (a restarted bag, deactivation)."""
        with self._lock:
            self._pending.clear()
            self._newest_s = float("-inf")


@dataclass(frozen=True, slots=True)
class Intrinsics:
    """A camera's pinhole matrix K (sensor_msgs/CameraInfo.k) at the size CameraInfo states."""

    k: np.ndarray                 # (3, 3)
    width: int
    height: int

    def at_size(self, height: int, width: int) -> np.ndarray:
        """K for the image decoded at (height, width): rows scaled by the resize."""
        return np.diag([width / self.width, height / self.height, 1.0]) @ self.k


def camera_intrinsics(msg: Any) -> Intrinsics:
    """sensor_msgs/CameraInfo -> Intrinsics; BadInputError when uncalibrated (K zero) or not finite."""
    k = np.asarray(msg.k, np.float64).reshape(3, 3)
    if not (np.isfinite(k).all() and k[0, 0] > 0 and k[1, 1] > 0 and msg.width > 0 and msg.height > 0):
        raise BadInputError(f"CameraInfo has no usable calibration (K {k.reshape(-1).tolist()}, size "
                            f"{msg.width}x{msg.height}); publish the camera's calibrated K and size")
    return Intrinsics(k, int(msg.width), int(msg.height))
