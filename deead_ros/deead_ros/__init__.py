"""deead_ros: real-time VLA driving planner with action-guided early exit (DeeAD) for ROS 2.

Importing the package imports nothing heavy: rclpy lives in `deead_ros.ros`, and torch,
onnxruntime and tensorrt are imported inside their own backend modules only.
"""
