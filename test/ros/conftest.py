"""ROS test set-up: a private DDS domain per test run on loopback, and an rclpy context per test."""
import os
import random

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed: run `make setup`")


@pytest.fixture(scope="session", autouse=True)
def ros_domain():
    """Isolate this run from other ROS processes on the machine."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 200)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    yield os.environ["ROS_DOMAIN_ID"]


@pytest.fixture
def ros_context():
    """A fresh rclpy context, shut down after the test."""
    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    context.try_shutdown()
