"""`multi_view`: the encoder of ORION-shaped models that read several cameras, the IMU and a memory.

Stem inputs (N cameras of the manifest's sensors.cameras, in that order; H, W the cameras' size):
    images       (1, N, 3, H, W) float32  each view resized to (H, W), (x/255 - mean) / std
    projections  (1, N, 3, 4)    float32  ego-frame point (x, y, z, 1) -> (u/W, v/H, 1) x depth in each view:
                                          the view's intrinsics (CameraInfo) and its mounting (as ORION's
                                          lidar2img, with the ego frame for the lidar's)
    route, ego, command_ids               as `driving_frame` (deead_ros.model.encoding)
    imu          (1, 7)          float32  (sensors.imu) acceleration / imu_accel_scale_mps2 (3), angular velocity
                                          / yaw_rate_scale_rps (3), valid; zeros when there is no IMU sample
    memory       (1, M, 2T + 2)  float32  (sensors.memory) the plans of the last M frames, newest first: waypoints
                                          / route_scale_m (each in the ego frame of its own frame), age / 1 s,
                                          valid (deead_ros.model.memory: made from the exit layer's plan)
numpy only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from deead_ros.engines.manifest import CameraSpec, SensorContract, TensorSpec
from deead_ros.errors import BadInputError
from deead_ros.exit.prior import RouteAhead
from deead_ros.model.encoding import (FrameInputs, InputSpec, at_model_size, encode_route_ego_command,
                                      normalise_images)
from deead_ros.model.memory import ComputedPlan

IMU_FEATURES = 7
# The optical frame (x right, y down, z forward) from the camera body frame (x forward, y left, z up), REP 103.
OPTICAL_FROM_BODY = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def rotation_rpy(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) rotation of a body in its parent frame from roll, pitch, yaw (Rz(yaw) Ry(pitch) Rx(roll))."""
    cr, sr, cp, sp = math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def projection(intrinsics: np.ndarray, image_hw: tuple[int, int], mounting: tuple[float, ...]) -> np.ndarray:
    """(3, 4) matrix taking an ego-frame point to (u / W, v / H, 1) times its depth in a view of size image_hw."""
    h, w = image_hw
    normalised = np.diag([1.0 / w, 1.0 / h, 1.0]) @ np.asarray(intrinsics, np.float64)
    x, y, z, roll, pitch, yaw = mounting
    camera_from_ego = OPTICAL_FROM_BODY @ rotation_rpy(roll, pitch, yaw).T
    extrinsic = np.hstack([camera_from_ego, -camera_from_ego @ np.array([[x], [y], [z]])])
    return normalised @ extrinsic


@dataclass(frozen=True, slots=True)
class MultiViewSpec:
    """The encoder's configuration (manifest encoder.config): the `driving_frame` inputs and the sensors."""

    inputs: InputSpec
    cameras: tuple[CameraSpec, ...]
    imu: bool = False
    memory_frames: int = 0                 # M plans remembered; 0: no memory
    horizon: int = 6                       # T waypoints of a remembered plan (the head contract's)
    imu_accel_scale_mps2: float = 9.81

    def __post_init__(self) -> None:
        sizes = {c.image_hw for c in self.cameras}
        if not self.cameras or len(sizes) != 1:
            raise ValueError(f"multi_view needs cameras of one size (got {sorted(sizes)})")
        problem = self.sensors().problem()
        if problem:
            raise ValueError(problem)
        if self.memory_frames < 0 or self.horizon < 1:
            raise ValueError(f"memory_frames={self.memory_frames} must be >= 0 and horizon={self.horizon} >= 1")

    @property
    def image_hw(self) -> tuple[int, int]:
        return self.cameras[0].image_hw

    def sensors(self) -> SensorContract:
        return SensorContract(self.cameras, self.imu, self.memory_frames > 0)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs.to_dict(), **self.sensors().to_dict(), "memory_frames": self.memory_frames,
                "horizon": self.horizon, "imu_accel_scale_mps2": self.imu_accel_scale_mps2}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiViewSpec:
        from deead_ros.engines.manifest import parse_sensors
        known = {"inputs", "cameras", "imu", "memory", "memory_frames", "horizon", "imu_accel_scale_mps2"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown multi_view keys {unknown}; known: {sorted(known)}")
        sensors = parse_sensors({"cameras": data["cameras"], "imu": data.get("imu", False),
                                 "memory": data.get("memory_frames", 0) > 0})
        return cls(InputSpec.from_dict(data["inputs"]), sensors.cameras, sensors.imu, int(data.get("memory_frames", 0)),
                   int(data.get("horizon", 6)), float(data.get("imu_accel_scale_mps2", 9.81)))


Memory = tuple[tuple[float, np.ndarray], ...]     # (stamp_s, plan (T, 2) m) of earlier frames, newest first


class MultiViewEncoder:
    """Several cameras with their projections, route, ego, command, and optionally the IMU and a memory."""

    name: ClassVar[str] = "multi_view"

    def __init__(self, spec: MultiViewSpec) -> None:
        self.spec = spec
        self.accel_window_s = spec.inputs.accel_window_s

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MultiViewEncoder:
        return cls(MultiViewSpec.from_dict(config))

    def to_config(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def sensors(self) -> SensorContract:
        return self.spec.sensors()

    def outputs(self) -> tuple[TensorSpec, ...]:
        spec, n = self.spec, len(self.spec.cameras)
        h, w = spec.image_hw
        specs = [TensorSpec("images", (1, n, 3, h, w), "float32"), TensorSpec("projections", (1, n, 3, 4), "float32"),
                 TensorSpec("route", (1, spec.inputs.route_points, 2), "float32"),
                 TensorSpec("ego", (1, 4), "float32"),
                 TensorSpec("command_ids", (1, spec.inputs.max_command_tokens), "int32")]
        if spec.imu:
            specs.append(TensorSpec("imu", (1, IMU_FEATURES), "float32"))
        if spec.memory_frames:
            specs.append(TensorSpec("memory", (1, spec.memory_frames, 2 * spec.horizon + 2), "float32"))
        return tuple(specs)

    def encode(self, frame: FrameInputs, route: RouteAhead | None, memory: Memory | None = None
               ) -> dict[str, np.ndarray]:
        """The stem's inputs; BadInputError when a camera's view or its calibration is missing."""
        spec = self.spec
        views = {v.name: v for v in frame.views}
        images, projections = [], []
        for camera in spec.cameras:
            view = views.get(camera.name)
            if view is None:
                raise BadInputError(f"frame has no view of camera '{camera.name}' (has {sorted(views)}); the model "
                                    f"reads {[c.name for c in spec.cameras]}")
            if view.intrinsics is None:
                raise BadInputError(f"camera '{camera.name}' has no calibration yet (no CameraInfo with a K matrix on "
                                    f"~/input/{camera.name}/camera_info); publish it")
            images.append(at_model_size(view.image_rgb, spec.image_hw))
            projections.append(projection(view.intrinsics, view.image_rgb.shape[:2], view.mounting))
        feed = {"images": normalise_images(np.stack(images), spec.inputs)[None],
                "projections": np.asarray(projections, np.float32)[None],
                **encode_route_ego_command([frame], [route], spec.inputs)}
        if spec.imu:
            feed["imu"] = self._imu(frame)
        if spec.memory_frames:
            feed["memory"] = self._memory(frame, memory or ())
        return feed

    def _imu(self, frame: FrameInputs) -> np.ndarray:
        out = np.zeros((1, IMU_FEATURES), np.float32)
        if frame.imu is not None:
            out[0, :3] = np.asarray(frame.imu.linear_accel_mps2) / self.spec.imu_accel_scale_mps2
            out[0, 3:6] = np.asarray(frame.imu.angular_velocity_rps) / self.spec.inputs.yaw_rate_scale_rps
            out[0, 6] = 1.0
        if not np.all(np.isfinite(out)):
            raise BadInputError(f"IMU sample has NaN or inf: {frame.imu}")
        return out

    def _memory(self, frame: FrameInputs, memory: Memory) -> np.ndarray:
        spec = self.spec
        out = np.zeros((1, spec.memory_frames, 2 * spec.horizon + 2), np.float32)
        for row, (stamp_s, plan) in enumerate(memory[:spec.memory_frames]):
            out[0, row, :-2] = plan.reshape(-1) / spec.inputs.route_scale_m
            out[0, row, -2:] = (frame.stamp_s - stamp_s, 1.0)
        return out

    def initial_memory(self) -> Memory:
        return ()

    def next_memory(self, memory: Memory, frame: FrameInputs, computed: ComputedPlan) -> Memory:
        """The exit layer's plan joins the memory, newest first (the early-exit rule: deead_ros.model.memory)."""
        plan = np.array(computed.trajectory_m, np.float32).reshape(self.spec.horizon, 2)
        return ((computed.stamp_s, plan), *memory)[:self.spec.memory_frames]
