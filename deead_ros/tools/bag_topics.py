"""Topic names and message types of the project's bags (demo bag, evaluation, replay)."""

CAMERA_COMPRESSED = "/camera/image/compressed"
CAMERA_RAW = "/camera/image/raw"
ROUTE = "/planning/route"
ODOMETRY = "/localization/odometry"
COMMAND = "/planning/command"
GROUND_TRUTH = "/ground_truth/trajectory"      # the expert's future, ego frame, stamped like the camera

WORLD_FRAME = "map"
EGO_FRAME = "base_link"
