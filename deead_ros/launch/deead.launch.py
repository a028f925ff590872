"""Launch deead_node: `ros2 launch deead_ros deead.launch.py [image:=...] [params_file:=...] [model_file_path:=...]`.

Remap the inputs to your vehicle's topics, e.g.
`ros2 launch deead_ros deead.launch.py image:=/sensing/camera/front/image_raw/compressed`.

DDS: the vehicle's own middleware configuration is left alone. This repository's localhost shared-memory
profile (config/fastdds_localhost_shm.xml: one machine, large images over shared memory, no network) is
used only with `localhost_dds:=true`, or by default when no Fast DDS / Cyclone DDS configuration is set.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from deead_ros.ros.dds import LOCALHOST_PROFILE, dds_configured, fast_dds_profile_variable

TOPICS = {"image": "/camera/image/compressed", "route": "/planning/route", "odometry": "/localization/odometry",
          "command": "/planning/command", "external_prior": "/planning/reference_path"}


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("deead_ros")
    nothing_set = not dds_configured()
    arguments = [DeclareLaunchArgument(name, default_value=topic, description=f"~/input/{name} source")
                 for name, topic in TOPICS.items()]
    arguments += [
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "deead_node.param.yaml"),
                              description="parameters in the /**: ros__parameters: form"),
        DeclareLaunchArgument("model_file_path", default_value="",
                              description="manifest.json written by deead_export, replacing the params file's; "
                                          "empty: the params file's (its default: the installed demo model)"),
        DeclareLaunchArgument("localhost_dds", default_value=str(nothing_set).lower(),
                              description="use this package's localhost shared-memory Fast DDS profile "
                                          "(default: only when no DDS configuration is set)"),
    ]
    return LaunchDescription([
        *arguments,
        SetEnvironmentVariable(fast_dds_profile_variable(), os.path.join(share, "config", LOCALHOST_PROFILE),
                               condition=IfCondition(LaunchConfiguration("localhost_dds"))),
        OpaqueFunction(function=deead_node),
    ])


def node_parameters(params_file: str, model_file_path: str) -> list:
    """launch_ros applies these in order, a later one winning: the params file, then only the arguments given on
    the command line. An empty model_file_path is the launch default and is not passed, so a model path in the
    user's params file stands; `model_file_path:=...` on the command line replaces it."""
    return [params_file, *([{"model_file_path": model_file_path}] if model_file_path else [])]


def deead_node(context: LaunchContext) -> list:
    """deead_node with the launch arguments resolved (to leave out the ones not given)."""
    parameters = node_parameters(LaunchConfiguration("params_file").perform(context),
                                 LaunchConfiguration("model_file_path").perform(context))
    return [Node(package="deead_ros", executable="deead_node", name="deead_node", output="screen",
                 parameters=parameters,
                 remappings=[(f"~/input/{name}", LaunchConfiguration(name)) for name in TOPICS])]
