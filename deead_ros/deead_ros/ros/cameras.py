"""The node's cameras: one on ~/input/image (the default, as always), or several, each under ~/input/<camera>/.

With the `cameras` parameter set (the names the model's manifest declares), every camera has its
image (raw or compressed, `camera_format`) on ~/input/<camera>/image and its CameraInfo on
~/input/<camera>/camera_info. The image callbacks file each message with CameraSync; a complete set
goes to the planning thread's mailbox (latest set wins), an incomplete one is dropped and counted as
`incomplete_set`. What reaches the mailbox is a message (one camera) or a CameraSet (several); the
worker assembles either with `assemble`, after checking each image (and each camera's CameraInfo) against
the camera the model was trained with (deead_ros.sensor_contract: reported once, refused with
camera_mismatch: refuse). rclpy only in this package (deead_ros.ros).
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from deead_ros.camera_sync import CameraSet, CameraSync
from deead_ros.frame_assembly import AssembledFrame, LatestInputs, model_image_hw, stamp_s
from deead_ros.health import FrameStats
from deead_ros.ros.debug import CAMERA_INFO_QOS
from deead_ros.ros.params import NodeConfig, mountings_by_camera
from deead_ros.runner import Runner
from deead_ros.sensor_contract import CameraContract, model_cameras

Store = Callable[[Any], None]
# Sensor-data QoS (best effort, depth 5): a frame that waits while the executor is busy still reaches the
# mailbox, where it is counted as superseded, instead of vanishing uncounted in the middleware's queue.
CAMERA_QOS = qos_profile_sensor_data


def frame_message(item: Any) -> Any:
    """The camera message whose header a frame's plan carries: the message itself, or a set's first camera's."""
    return item.messages[0][1] if isinstance(item, CameraSet) else item


class Cameras:
    """Subscriptions and synchronisation of the node's camera(s), and the assembly of what they deliver."""

    def __init__(self, config: NodeConfig, runner: Runner, inputs: LatestInputs, stats: FrameStats,
                 deliver: Store, logger: Any, sync_tolerance_s: Callable[[], float]) -> None:
        """config: the snapshot at configure, for the read-only parameters (camera_format, cameras, camera_mountings,
        camera_mismatch); sync_tolerance_s: where the live io.camera_sync_tolerance_s is read at each image."""
        self.config, self.inputs, self.stats = config, inputs, stats
        self._deliver, self._logger = deliver, logger
        sensors = runner.chain.manifest.sensors
        self.image_hw = model_image_hw(runner.encoder)     # a larger jpeg is decoded straight to this
        # Several cameras (the `cameras` parameter names those the manifest declares: params.sensor_problem):
        # in the model's order, as its stem reads the views. One camera: ~/input/image, or ~/input/<name>/image.
        several = len(sensors.cameras) > 1
        self.cameras = sensors.cameras if several else ()
        self.names: tuple[str, ...] = sensors.camera_names if several else (config.cameras[:1] or ("",))
        self.sync = CameraSync(self.names, sync_tolerance_s) if several else None
        self.mountings = mountings_by_camera(config)
        self.contract = CameraContract(model_cameras(sensors, self.image_hw, self.names[0]), config.camera_mismatch,
                                       lambda text, _stretched: logger.warning(
                                           f"{text} (camera_mismatch: {config.camera_mismatch})"))

    def subscriptions(self, camera_info: Callable[[str, Any], None]) -> list[tuple[str, type, Store, Any]]:
        """(topic under ~/input/, message type, callback, QoS) for each camera's CameraInfo, then each image
        (the images last: the executor runs ready callbacks in creation order)."""
        image_type = Image if self.config.camera_format == "raw" else CompressedImage
        infos, images = [], []
        for name in self.names:
            prefix = f"{name}/" if name else ""
            infos.append((f"{prefix}camera_info", CameraInfo, partial(self._camera_info, name, camera_info),
                          CAMERA_INFO_QOS))
            images.append((f"{prefix}image", image_type, partial(self._image, name) if self.sync else self._deliver,
                           CAMERA_QOS))
        return infos + images

    def _camera_info(self, camera: str, forward: Callable[[str, Any], None], msg: Any) -> None:
        self.contract.check_camera_info(camera, msg)
        forward(camera, msg)

    def _image(self, camera: str, msg: Any) -> None:
        """One camera's image of several: a complete set is one frame received (and delivered); an incomplete
        one is one frame received and dropped."""
        assert self.sync is not None
        complete, dropped = self.sync.add(camera, stamp_s(msg.header.stamp), msg)
        for drop in dropped:
            self.stats.note_input("image")
            self.stats.note_dropped("incomplete_set")
            self._logger.warning(f"camera set dropped: {drop.reason}", throttle_duration_sec=5.0)
        if complete is not None:
            self.stats.note_input("image")
            self._deliver(complete)

    def assemble(self, item: Any, config: NodeConfig) -> AssembledFrame:
        """The frame of a delivered message or set with this frame's settings snapshot (BadInputError for an unusable
        image, CameraMismatchError for a stretched one with camera_mismatch: refuse)."""
        raw, use_external = self.config.camera_format == "raw", config.prior.source == "external"
        max_input_age_s = config.io.max_input_age_s
        if isinstance(item, CameraSet):
            for camera, msg in item.messages:
                self.contract.check_image(camera, msg, raw)
            return self.inputs.assemble_set(item.stamp_s, item.messages, raw, max_input_age_s, use_external,
                                            self.cameras, self.mountings, config.inputs)
        self.contract.check_image(self.names[0], item, raw)
        return self.inputs.assemble(item, raw, max_input_age_s, use_external, self.image_hw, config.inputs)

    def clear(self) -> None:
        """Forget open sets (deactivation)."""
        if self.sync is not None:
            self.sync.clear()

