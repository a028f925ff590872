"""Launch deead_node with the package's defaults: `ros2 launch deead_ros deead.launch.py`.

Remap the inputs to your vehicle's topics, e.g.
`ros2 launch deead_ros deead.launch.py image:=/sensing/camera/front/image/compressed`.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("deead_ros")
    topics = {"image": "/camera/image/compressed", "route": "/planning/route", "odometry": "/localization/odometry",
              "command": "/planning/command", "external_prior": "/planning/reference_path"}
    arguments = [DeclareLaunchArgument(name, default_value=topic, description=f"~/input/{name} source")
                 for name, topic in topics.items()]
    arguments.append(DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "deead.yaml")))
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE",
                               os.path.join(share, "config", "fastdds_localhost_shm.xml")),
        Node(package="deead_ros", executable="deead_node", name="deead_node", output="screen",
             parameters=[LaunchConfiguration("params_file")],
             remappings=[(f"~/input/{name}", LaunchConfiguration(name)) for name in topics]),
    ])
