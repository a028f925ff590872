"""Plans recorded for people to look at: a ROS 2 MCAP (Foxglove, RViz, ros2 bag play) and an MP4 of the debug images.

deead_eval writes these from its offline run (`--record`, `--video`). The MCAP carries the setting shown
under the live node's own topic names (`/deead_node/output/trajectory`, `.../exit_diagnostics`,
`/deead_node/debug/{image,markers,prior}`), so config/foxglove_layout.json shows a recording and a live node
alike, plus every setting's trajectory and exit diagnostics under `/deead_eval/<setting>/`, the camera as
recorded and the ground truth. Messages are written with rosbags (no ROS install needed); the custom
deead_ros_msgs types are registered from their installed .msg files, so the MCAP embeds their definitions
and Foxglove decodes them without the package.
"""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from deead_ros.debug_view import LineStrip, Text, encode_jpeg
from deead_ros.diagnostics import exit_diagnostics_fields
from deead_ros.errors import DeeadError
from deead_ros.runner import PlanResult
from deead_ros import bags as topics

NODE = "/deead_node"                          # the live node's name: its topics, for the setting shown
TRAJECTORY = f"{NODE}/output/trajectory"
EXIT_DIAGNOSTICS = f"{NODE}/output/exit_diagnostics"
DEBUG_IMAGE = f"{NODE}/debug/image"
DEBUG_MARKERS = f"{NODE}/debug/markers"
DEBUG_PRIOR = f"{NODE}/debug/prior"
INTERFACES = ("ExitCheckpoint", "ExitDiagnostics")      # deead_ros_msgs/msg/*, in dependency order


class RecordingError(DeeadError):
    """The recording cannot be written (its path exists, the interfaces are not installed)."""


def interface_dir() -> Path:
    """share/deead_ros_msgs/msg: from the ament index when it knows the package, else this interpreter's prefix."""
    if os.environ.get("AMENT_PREFIX_PATH"):
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
        try:
            return Path(get_package_share_directory("deead_ros_msgs")) / "msg"
        except PackageNotFoundError:
            pass
    return Path(sys.prefix) / "share" / "deead_ros_msgs" / "msg"


def recording_typestore() -> Typestore:
    """ROS 2 Jazzy's message types plus deead_ros_msgs (from the installed .msg files)."""
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = interface_dir()
    types: dict[str, Any] = {}
    for name in INTERFACES:
        path = folder / f"{name}.msg"
        if not path.is_file():
            raise RecordingError(f"{path} is missing: the deead_ros_msgs interfaces are not installed; "
                                 "run `make setup`")
        types.update(get_types_from_msg(path.read_text(), f"deead_ros_msgs/msg/{name}"))
    store.register(types)
    return store


def _zero(basetype: str) -> Any:
    """The default of a message's base-type field (what a ROS message holds before it is set)."""
    if basetype == "string":
        return ""
    if basetype == "bool":
        return False
    return 0.0 if basetype.startswith("float") else 0


class PlanRecorder:
    """Writes one frame's plans at a time into a ROS 2 MCAP; connections are added as their topics first appear.

    `path` ending in `.mcap`: a single MCAP file (what Foxglove opens, and `ros2 bag play` too), replaced when it
    exists; otherwise a rosbag2 folder (metadata.yaml and the .mcap), which must not exist yet.
    """

    def __init__(self, path: Path, backend: str, model_version: str) -> None:
        self.path = path
        self.store = recording_typestore()
        self._types = self.store.types
        self._backend, self._model_version = backend, model_version
        is_file = path.suffix == ".mcap"
        self._folder = path.with_name(path.name + ".partial") if is_file else path
        if is_file and path.is_dir():
            raise RecordingError(f"--record {path}: a folder of that name exists; remove it or pick another path")
        if not is_file and path.exists():
            raise RecordingError(f"--record {path}: the rosbag2 folder exists; remove it, pick another path, or give "
                                 "a path ending in .mcap for a single file")
        if is_file and self._folder.exists():
            shutil.rmtree(self._folder)              # left by an interrupted run of ours
        self._writer = Writer(self._folder, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, Any] = {}
        diagnostics_fields = self.store.fielddefs["deead_ros_msgs/msg/ExitDiagnostics"][1]
        self._diagnostics_defaults = {name: _zero(spec[1][0]) for name, spec in diagnostics_fields
                                      if spec[0] == Nodetype.BASE}

    def _write(self, topic: str, msg: Any, stamp_ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store)
        self._writer.write(self._connections[topic], stamp_ns, self.store.serialize_cdr(msg, msgtype))

    def _header(self, stamp_s: float, frame_id: str) -> Any:
        sec = math.floor(stamp_s)
        stamp = self._types["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=min(int((stamp_s - sec) * 1e9),
                                                                                     999_999_999))
        return self._types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def path_message(self, points_m: np.ndarray, header: Any) -> Any:
        """(T, 2) ego-frame waypoints -> nav_msgs/Path, each pose facing along the path (as the node's)."""
        t = self._types
        points = np.asarray(points_m, dtype=np.float64).reshape(-1, 2)
        steps = np.diff(np.vstack([np.zeros((1, 2)), points]), axis=0)
        poses = []
        for (x, y), (dx, dy) in zip(points.tolist(), steps.tolist()):
            yaw = math.atan2(dy, dx)
            pose = t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)))
            poses.append(t["geometry_msgs/msg/PoseStamped"](header=header, pose=pose))
        return t["nav_msgs/msg/Path"](header=header, poses=poses)

    def exit_diagnostics(self, result: PlanResult, header: Any, delta_m: float, prior_age_s: float) -> Any:
        """deead_ros_msgs/ExitDiagnostics of one plan, as the node fills it (its own timing fields stay 0 here)."""
        t = self._types
        fields = exit_diagnostics_fields(result, delta_m, prior_age_s, self._backend, self._model_version)
        checkpoint = t["deead_ros_msgs/msg/ExitCheckpoint"]
        values = {**self._diagnostics_defaults, **fields, "header": header,
                  "checkpoints": [checkpoint(**c) for c in fields["checkpoints"]]}
        return t["deead_ros_msgs/msg/ExitDiagnostics"](**values)

    def marker_array(self, markers: list[LineStrip | Text], header: Any) -> Any:
        """visualization_msgs/MarkerArray: a DELETEALL first (the checkpoints vary per frame), then the markers."""
        t = self._types
        marker_type: Any = t["visualization_msgs/msg/Marker"]
        vec, point, color = t["geometry_msgs/msg/Vector3"], t["geometry_msgs/msg/Point"], t["std_msgs/msg/ColorRGBA"]
        identity: Any = t["geometry_msgs/msg/Pose"](position=point(x=0.0, y=0.0, z=0.0),
                                               orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0,
                                                                                             w=1.0))

        def marker(kind: int, action: int, ns: str = "", marker_id: int = 0, pose: Any = identity,
                   scale: tuple[float, float, float] = (0.0, 0.0, 0.0), rgba: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0),
                   points: list[Any] | None = None, text: str = "") -> Any:
            return marker_type(
                header=header, ns=ns, id=marker_id, type=kind, action=action, pose=pose,
                scale=vec(x=scale[0], y=scale[1], z=scale[2]),
                color=color(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3]),
                lifetime=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False,
                points=points or [], colors=[], texture_resource="",
                texture=t["sensor_msgs/msg/CompressedImage"](header=header, format="", data=np.zeros(0, np.uint8)),
                uv_coordinates=[], text=text, mesh_resource="",
                mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
                mesh_use_embedded_materials=False)

        out = [marker(marker_type.ARROW, marker_type.DELETEALL)]
        for m in markers:
            if isinstance(m, LineStrip):
                out.append(marker(marker_type.LINE_STRIP, marker_type.ADD, m.ns, m.id, scale=(m.width_m, 0.0, 0.0),
                                  rgba=m.rgba, points=[point(x=x, y=y, z=z) for x, y, z in m.points_m.tolist()]))
            else:
                x, y, z = m.position_m
                pose = t["geometry_msgs/msg/Pose"](position=point(x=x, y=y, z=z), orientation=identity.orientation)
                out.append(marker(marker_type.TEXT_VIEW_FACING, marker_type.ADD, m.ns, m.id, pose=pose,
                                  scale=(0.0, 0.0, m.height_m), rgba=m.rgba, text=m.text))
        return t["visualization_msgs/msg/MarkerArray"](markers=out)

    def write_frame(self, stamp_s: float, camera_msg: Any, results: dict[str, PlanResult], deltas_m: dict[str, float],
                    shown: str, debug_rgb: np.ndarray, markers: list[LineStrip | Text], truth_m: np.ndarray | None,
                    prior_age_s: float) -> None:
        """One camera frame: its camera message, each setting's plan, and the shown setting as the node publishes it.

        Args:
            stamp_s: the camera stamp (every message's header stamp and log time, as the node stamps its outputs).
            camera_msg: the camera message as recorded (rosbags' Jazzy type), or None.
            results: {setting: PlanResult}; deltas_m: {setting: delta in force} (nan: full depth).
            shown: the setting published under the node's topics, with debug_rgb (its debug image) and markers.
            truth_m: (T, 2) ground truth, ego frame, or None; prior_age_s: as ExitDiagnostics.prior_age_s.
        """
        stamp_ns = round(stamp_s * 1e9)
        header = self._header(stamp_s, topics.EGO_FRAME)
        if camera_msg is not None:
            topic = topics.CAMERA_RAW if camera_msg.__msgtype__ == "sensor_msgs/msg/Image" else topics.CAMERA_COMPRESSED
            self._write(topic, camera_msg, stamp_ns)
        for setting, result in results.items():
            self._write(f"/deead_eval/{setting}/trajectory", self.path_message(result.trajectory_m, header), stamp_ns)
            self._write(f"/deead_eval/{setting}/exit_diagnostics",
                        self.exit_diagnostics(result, header, deltas_m[setting], prior_age_s), stamp_ns)
        result = results[shown]
        self._write(TRAJECTORY, self.path_message(result.trajectory_m, header), stamp_ns)
        self._write(EXIT_DIAGNOSTICS, self.exit_diagnostics(result, header, deltas_m[shown], prior_age_s), stamp_ns)
        if result.prior.trajectory_m is not None:
            self._write(DEBUG_PRIOR, self.path_message(result.prior.trajectory_m, header), stamp_ns)
        image = self._types["sensor_msgs/msg/CompressedImage"](
            header=self._header(stamp_s, "camera_debug"), format="jpeg",
            data=np.frombuffer(encode_jpeg(debug_rgb), dtype=np.uint8))
        self._write(DEBUG_IMAGE, image, stamp_ns)
        self._write(DEBUG_MARKERS, self.marker_array(markers, header), stamp_ns)
        if truth_m is not None:
            self._write(topics.GROUND_TRUTH, self.path_message(truth_m, header), stamp_ns)

    def close(self) -> None:
        """Finish the file (its summary and index); a single-file recording is moved out of its rosbag2 folder."""
        self._writer.close()
        if self._folder != self.path:
            os.replace(self._folder / f"{self._folder.name}.mcap", self.path)
            shutil.rmtree(self._folder)


class DebugVideo:
    """An H.264 MP4 of debug images, encoded by imageio-ffmpeg's bundled ffmpeg (no system ffmpeg needed)."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path, self.fps = path, fps
        self.frames = 0
        self._writer: Any = None
        self._size = (0, 0)                 # (width, height) of the first frame

    def add(self, image_rgb: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame; every frame must have the first one's size."""
        import imageio_ffmpeg  # type: ignore[import-untyped]
        height, width = image_rgb.shape[:2]
        if self._writer is None:
            self._size = (width, height)
            # macro_block_size 2: H.264 in yuv420p needs even sides; ffmpeg pads an odd one by a pixel
            self._writer = imageio_ffmpeg.write_frames(str(self.path), self._size, fps=self.fps, codec="libx264",
                                                       macro_block_size=2, ffmpeg_log_level="error")
            self._writer.send(None)
        if (width, height) != self._size:
            raise RecordingError(f"debug image {width}x{height} differs from the video's {self._size[0]}x"
                                 f"{self._size[1]}: the camera changed size within the bag")
        self._writer.send(np.ascontiguousarray(image_rgb, dtype=np.uint8).tobytes())
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
