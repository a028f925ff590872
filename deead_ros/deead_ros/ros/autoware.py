"""The plan as Autoware's autoware_planning_msgs/Trajectory (its planning -> control interface), optional.

autoware_planning_msgs is imported only when the output is made (`output.autoware_trajectory` true): a vehicle
without Autoware never needs it, and one that asks for it without it is told what to do. The poses are the
nav_msgs/Path's, the motion (speed, acceleration, heading rate) deead_ros.trajectory_kinematics'; this module only
copies them into the messages.
"""
from __future__ import annotations

from typing import Any

from nav_msgs.msg import Path
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import QoSProfile

from deead_ros.errors import ConfigError
from deead_ros.ros.ros_io import nanoseconds
from deead_ros.trajectory_kinematics import TrajectoryKinematics

TOPIC = "~/output/autoware_trajectory"


class AutowareTrajectoryOutput:
    """~/output/autoware_trajectory: a lifecycle publisher of autoware_planning_msgs/Trajectory, made at configure,
    so a package that is missing (or whose type support libraries are not on the library path) fails there, in
    one line, not at the first plan."""

    def __init__(self, node: LifecycleNode, qos: QoSProfile) -> None:
        try:
            from autoware_planning_msgs.msg import Trajectory, TrajectoryPoint
            self._publisher = node.create_lifecycle_publisher(Trajectory, TOPIC, qos)
        except Exception as err:    # no module, or its libraries not loadable
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise ConfigError(
                f"output.autoware_trajectory is true but Autoware's autoware_planning_msgs cannot be loaded "
                f"({reason}); source the Autoware workspace (its install/setup.bash) before starting deead_node, or "
                "set output.autoware_trajectory false") from err
        self._trajectory: Any = Trajectory
        self._point: Any = TrajectoryPoint

    def message(self, path: Path, kinematics: TrajectoryKinematics) -> Any:
        """One frame's plan -> autoware_planning_msgs/Trajectory with the nav_msgs/Path's header (camera stamp,
        output frame) and its poses (the Path's numbers, not computed twice: both outputs face the same way); per
        point time_from_start (k x dt), longitudinal speed, acceleration and heading rate; lateral speed and the
        front and rear wheel angles stay 0. The points hold the Path's pose messages: publish before the Path is
        refilled, as publish() does (rclpy serialises inside publish)."""
        rows = zip(path.poses, nanoseconds(kinematics.times_s).tolist(), kinematics.speed_mps.tolist(),
                   kinematics.accel_mps2.tolist(), kinematics.yaw_rate_rps.tolist())
        points = []
        for stamped, due_ns, speed, accel, yaw_rate in rows:
            point = self._point(pose=stamped.pose, longitudinal_velocity_mps=speed, acceleration_mps2=accel,
                                heading_rate_rps=yaw_rate)
            point.time_from_start.sec, point.time_from_start.nanosec = divmod(due_ns, 1_000_000_000)
            points.append(point)
        return self._trajectory(header=path.header, points=points)

    def publish(self, path: Path, kinematics: TrajectoryKinematics) -> None:
        self._publisher.publish(self.message(path, kinematics))
