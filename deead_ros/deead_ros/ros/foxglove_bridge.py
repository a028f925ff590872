"""The node's outputs on a Foxglove WebSocket server (foxglove-sdk): live in a browser, without a ROS install.

Optional (parameter `foxglove.port`, 0 = off): deead_ros.ros.debug imports this module only when it is on,
so a node without foxglove-sdk installed runs as before. The channels carry the ROS topics' names, so the
layout config/foxglove_layout.json works on both a ROS connection and this one:

| channel (the ROS topic's resolved name) | schema                                       | encoding |
|-----------------------------------------|----------------------------------------------|----------|
| .../debug/image                         | foxglove.CompressedImage (jpeg)              | protobuf |
| .../output/trajectory                   | foxglove.PosesInFrame                        | protobuf |
| .../debug/markers                       | foxglove.SceneUpdate                         | protobuf |
| .../output/exit_diagnostics             | deead_ros_msgs/msg/ExitDiagnostics's fields  | json     |

Each channel is logged to only while a client subscribes to it (`has_sinks`), so an idle server costs a
few checks per frame. The server runs on the SDK's own threads; logging is thread-safe. Clients connect
with the WebSocket subprotocol `foxglove.sdk.v1` (the Foxglove app does; foxglove-sdk 0.30 no longer
accepts the older `foxglove.websocket.v1`).
"""
from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import foxglove
from foxglove.channels import CompressedImageChannel, PosesInFrameChannel, SceneUpdateChannel
from foxglove.messages import (Color, CompressedImage, Duration, LinePrimitive, LinePrimitiveLineType, Point3, Pose,
                               PosesInFrame, Quaternion, SceneEntity, SceneEntityDeletion, SceneEntityDeletionType,
                               SceneUpdate, TextPrimitive, Timestamp, Vector3)

from deead_ros.debug_view import LineStrip, Text
from deead_ros.errors import ConfigError

_TIME_TYPES = ("builtin_interfaces/Time", "builtin_interfaces/Duration")
_JSON_TYPES = {"boolean": "boolean", "string": "string", "wstring": "string", "float": ["number", "null"],
               "double": ["number", "null"]}      # non-finite numbers are written as null (JSON has no NaN)


def message_fields(msg: Any) -> dict[str, Any]:
    """A ROS message as JSON-ready values: nested messages as objects, times as {sec, nsec} (Foxglove's form).

    Non-finite floats become None (null), which JSON can hold.
    """
    out: dict[str, Any] = {}
    for name, ros_type in msg.get_fields_and_field_types().items():
        out[name] = _plain(getattr(msg, name), ros_type)
    return out


def _plain(value: Any, ros_type: str) -> Any:
    if ros_type in _TIME_TYPES:
        return {"sec": int(value.sec), "nsec": int(value.nanosec)}
    if hasattr(value, "get_fields_and_field_types"):
        return message_fields(value)
    if ros_type.startswith("sequence<") or "[" in ros_type:
        item_type = ros_type.split("<", 1)[1].rstrip(">") if ros_type.startswith("sequence<") else ros_type
        return [_plain(item, item_type.split("[", 1)[0]) for item in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return list(value)
    return value


def message_schema(msg_type: Any) -> dict[str, Any]:
    """A JSON Schema of a ROS message type's fields as message_fields writes them (for Foxglove's panels)."""
    return {"type": "object", "properties": {name: _field_schema(ros_type) for name, ros_type
                                             in msg_type.get_fields_and_field_types().items()}}


def _field_schema(ros_type: str) -> dict[str, Any]:
    if ros_type in _TIME_TYPES:
        return {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}}
    if ros_type.startswith("sequence<") or "[" in ros_type:
        item = ros_type.split("<", 1)[1].rstrip(">") if ros_type.startswith("sequence<") else ros_type.split("[")[0]
        return {"type": "array", "items": _field_schema(item)}
    if "/" in ros_type:                                # a nested message, e.g. std_msgs/Header
        package, _, type_name = ros_type.partition("/")
        return message_schema(getattr(importlib.import_module(f"{package}.msg"), type_name))
    return {"type": _JSON_TYPES.get(ros_type, "integer")}


def _timestamp(stamp: Any) -> Timestamp:
    return Timestamp(int(stamp.sec), int(stamp.nanosec))


def _color(rgba: Sequence[float]) -> Color:
    return Color(r=float(rgba[0]), g=float(rgba[1]), b=float(rgba[2]), a=float(rgba[3]))


_IDENTITY = Quaternion(w=1.0)


def scene_update(markers: Sequence[LineStrip | Text], stamp: Any, frame_id: str, lifetime_s: float) -> SceneUpdate:
    """debug_view markers -> foxglove.SceneUpdate: delete every entity first, then one entity per marker.

    Entity ids are `ns/id`, as the MarkerArray's; lifetime 0 keeps an entity until it is replaced.
    """
    timestamp, lifetime = _timestamp(stamp), Duration.from_secs(lifetime_s)
    entities = []
    for marker in markers:
        common: dict[str, Any] = {"timestamp": timestamp, "frame_id": frame_id, "id": f"{marker.ns}/{marker.id}",
                                  "lifetime": lifetime}
        if isinstance(marker, LineStrip):
            points = [Point3(x=x, y=y, z=z) for x, y, z in marker.points_m.tolist()]
            line = LinePrimitive(type=LinePrimitiveLineType.LineStrip, pose=Pose(orientation=_IDENTITY),
                                 thickness=marker.width_m, points=points, color=_color(marker.rgba))
            entities.append(SceneEntity(**common, lines=[line]))
        else:
            x, y, z = marker.position_m
            pose = Pose(position=Vector3(x=x, y=y, z=z), orientation=_IDENTITY)
            text = TextPrimitive(pose=pose, billboard=True, font_size=marker.height_m, color=_color(marker.rgba),
                                 text=marker.text)
            entities.append(SceneEntity(**common, texts=[text]))
    deletion = SceneEntityDeletion(timestamp=timestamp, type=SceneEntityDeletionType.All)
    return SceneUpdate(deletions=[deletion], entities=entities)


def poses_in_frame(path: Any) -> PosesInFrame:
    """nav_msgs/Path -> foxglove.PosesInFrame (the same poses, stamp and frame)."""
    poses = [Pose(position=Vector3(x=p.pose.position.x, y=p.pose.position.y, z=p.pose.position.z),
                  orientation=Quaternion(x=p.pose.orientation.x, y=p.pose.orientation.y, z=p.pose.orientation.z,
                                         w=p.pose.orientation.w))
             for p in path.poses]
    return PosesInFrame(timestamp=_timestamp(path.header.stamp), frame_id=path.header.frame_id, poses=poses)


class FoxgloveServer:
    """A Foxglove WebSocket server with the node's four channels, on its own SDK context (no global state)."""

    def __init__(self, host: str, port: int, name: str, topics: dict[str, str], exit_type: Any) -> None:
        """Start serving on ws://host:port.

        Args:
            topics: channel names by role: image, trajectory, markers, exit_diagnostics.
            exit_type: the ExitDiagnostics message class (its fields make the JSON channel's schema).
        Raises:
            ConfigError: the server cannot listen there (the port is taken, the address is not this machine's).
        """
        self._context = foxglove.Context()
        try:
            self._server = foxglove.start_server(name=name, host=host, port=port, context=self._context)
        except (RuntimeError, OSError, ValueError) as err:
            raise ConfigError(f"foxglove.port={port}: cannot serve Foxglove on ws://{host}:{port} ({err}); "
                              "choose a free port, or 0 to turn the server off") from err
        self.port: int = self._server.port
        self.image = CompressedImageChannel(topics["image"], context=self._context)
        self.trajectory = PosesInFrameChannel(topics["trajectory"], context=self._context)
        self.markers = SceneUpdateChannel(topics["markers"], context=self._context)
        schema = {**message_schema(exit_type), "title": "deead_ros_msgs/msg/ExitDiagnostics"}
        self.exit_diagnostics = foxglove.Channel(topics["exit_diagnostics"], schema=schema, context=self._context)

    def wants_image(self) -> bool:
        return bool(self.image.has_sinks())

    def wants_markers(self) -> bool:
        return bool(self.markers.has_sinks())

    def log_plan(self, path: Any, exit_msg: Any) -> None:
        """Log the trajectory (a nav_msgs/Path) and the exit diagnostics, each only while subscribed."""
        if self.trajectory.has_sinks():
            self.trajectory.log(poses_in_frame(path))
        if self.exit_diagnostics.has_sinks():
            self.exit_diagnostics.log(message_fields(exit_msg))

    def log_image(self, jpeg: bytes, stamp: Any, frame_id: str) -> None:
        self.image.log(CompressedImage(timestamp=_timestamp(stamp), frame_id=frame_id, data=jpeg, format="jpeg"))

    def log_markers(self, markers: Sequence[LineStrip | Text], stamp: Any, frame_id: str, lifetime_s: float) -> None:
        self.markers.log(scene_update(markers, stamp, frame_id, lifetime_s))

    def stop(self) -> None:
        self._server.stop()
