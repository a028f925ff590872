"""deead_replay: play a rosbag2 (sqlite3 or mcap) into live topics with its recorded timing.

Messages are published as the raw CDR bytes recorded in the bag (no decode, no re-encode), so
what the node receives is byte for byte what was recorded. Reading uses rosbags' AnyReader from
this one thread only (its documentation warns against concurrent iteration).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import remove_ros_args
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

from deead_ros.bags import parse_remaps

# Routes and commands are latched (transient local) as a route planner publishes them; everything is
# reliable with a small queue, so a recorded stream (a route per frame) is replayed without losses.
LATCHED_TYPES = {"nav_msgs/msg/Path", "std_msgs/msg/String"}
CAMERA_TYPES = {"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"}


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    package, _, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deead_replay", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 folder (sqlite3 or mcap) or a .mcap/.db3 file's folder")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds of the bag")
    parser.add_argument("--loop", action="store_true", help="play the bag again and again")
    parser.add_argument("--duration", type=float, default=0.0, help="stop after this many wall seconds (0: no limit)")
    parser.add_argument("--topics", nargs="*", default=None, help="only these topics (default: all)")
    parser.add_argument("--remap", nargs="*", default=[], help="topic remaps OLD:=NEW")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag's time (use_sim_time)")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0,
                        help="wait up to this many seconds for a subscriber on the camera topics, and for every "
                             "subscriber the ROS graph shows on the other topics, before playing")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    args = build_parser().parse_args(remove_ros_args(argv)[1:])
    if args.rate <= 0:
        print("deead_replay: --rate must be > 0", file=sys.stderr)
        return 2
    if not args.bag.exists():
        print(f"deead_replay: no bag at {args.bag}; give the bag's folder (with metadata.yaml)", file=sys.stderr)
        return 2
    remaps = parse_remaps(args.remap)
    rclpy.init(args=argv)
    node = rclpy.create_node("deead_replay")
    try:
        with AnyReader([args.bag]) as reader:
            connections = [c for c in reader.connections if args.topics is None or c.topic in args.topics]
            if not connections:
                print(f"deead_replay: none of {args.topics} in {args.bag}; it has "
                      f"{sorted({c.topic for c in reader.connections})}", file=sys.stderr)
                return 2
            publishers = {}
            for c in connections:
                latched = c.msgtype in LATCHED_TYPES
                qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
                publishers[c.id] = node.create_publisher(message_class(c.msgtype), remaps.get(c.topic, c.topic), qos)
            clock_pub = node.create_publisher(Clock, "/clock", 10) if args.clock else None
            cameras = [publishers[c.id] for c in connections if c.msgtype in CAMERA_TYPES]
            _wait_for_subscribers(node, cameras or list(publishers.values()), list(publishers.values()),
                                  args.wait_for_subscribers)
            count = _play(reader, connections, publishers, clock_pub, args)
            for publisher in publishers.values():     # deliver the last messages before the writers go away
                publisher.wait_for_all_acked(Duration(seconds=2.0))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    print(f"deead_replay: published {count} messages from {args.bag}")
    return 0


def _wait_for_subscribers(node: Node, cameras: list, publishers: list, timeout_s: float) -> None:
    """Until a subscriber on each camera topic is matched, and so is each subscriber the graph shows on the other
    topics: a node's odometry reader (volatile) can match a moment after its camera's, and loses the samples sent
    before, so its first frames would be planned from another history than the same bag's next replay."""
    def ready() -> bool:
        return (all(node.count_subscribers(p.topic_name) > 0 and p.get_subscription_count() > 0 for p in cameras)
                and all(p.get_subscription_count() >= node.count_subscribers(p.topic_name) for p in publishers))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ready():
        time.sleep(0.05)


def _play(reader: AnyReader, connections, publishers, clock_pub, args) -> int:
    start_ns = reader.start_time + int(args.start_offset * 1e9)
    wall_start = time.monotonic()
    count = 0
    while True:
        loop_start = time.monotonic()
        for connection, timestamp, raw in reader.messages(connections=connections, start=start_ns):
            due = loop_start + (timestamp - start_ns) * 1e-9 / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if clock_pub is not None:
                clock = Clock()
                clock.clock.sec, clock.clock.nanosec = divmod(timestamp, 1_000_000_000)
                clock_pub.publish(clock)
            publishers[connection.id].publish(bytes(raw))
            count += 1
            if args.duration and time.monotonic() - wall_start > args.duration:
                return count
        if not args.loop:
            return count


if __name__ == "__main__":
    raise SystemExit(main())
