"""deead_lab: the workstation's tools around the deead_ros runtime.

Export with the model definitions (torch, transformers), training, the simulator's data, evaluation and
its report page, calibration, the closed loop, the dataset card and the reports. It imports deead_ros;
deead_ros never imports it, so a vehicle installs the runtime alone. Never imports rclpy.
"""
