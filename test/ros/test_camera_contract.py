"""deead_node and the sensor contract: a 16:9 camera into the 5:3 model is reported (log once, /diagnostics) and
planned stretched (camera_mismatch: warn) or dropped as camera_mismatch (refuse)."""
import io

import numpy as np
import pytest
from PIL import Image as PilImage

pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

from test.ros.test_node import FIRST_CHECKPOINT, Driver  # noqa: E402


def wide_jpeg(seed: int) -> bytes:
    """192x108 (16:9), the issue's stream; the small model was trained on 160x96 (5:3)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (108, 192, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PilImage.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("mode", ["warn", "refuse"])
def test_a_camera_of_another_aspect_is_reported_and_planned_or_refused(small_model, ros_context, mode):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("model_file_path", value=str(small_model)), Parameter("camera_mismatch", value=mode),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("diagnostics.period_s", value=0.2)]
    node = DeeadNode(context=ros_context, parameter_overrides=overrides)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    dropped = lambda: node.stats.snapshot().drops.get("camera_mismatch", 0)  # noqa: E731
    try:
        driver.wait_for_node()
        for sec in (1, 2, 3):
            driver.send_frame(sec, data=wide_jpeg(sec))
            if mode == "warn":
                assert driver.spin_until(lambda sec=sec: (sec, 0) in driver.exits, 20.0), "warn plans the frame"
            else:
                assert driver.spin_until(lambda sec=sec: dropped() == sec, 10.0), "refuse drops it as camera_mismatch"
        assert (len(driver.exits), dropped()) == ((3, 0) if mode == "warn" else (0, 3))
        assert list(node._cameras.contract.reports) == [("", "image")], "one report for the camera, not one a frame"

        def contract_status():
            return next((s for a in reversed(driver.diagnostics) for s in a.status if s.name.endswith("camera_contract")
                         and s.level != b"\x00"), None)
        assert driver.spin_until(lambda: contract_status() is not None, 10.0), "/diagnostics names the camera"
        status = contract_status()
        values = {v.key: v.value for v in status.values}
        assert status.level == (b"\x01" if mode == "warn" else b"\x02")
        assert values["image.expected"] == "160x96 (5:3)" and values["image.actual"] == "192x108 (16:9)"
        assert values["camera_mismatch"] == mode and "192x108 (16:9)" in status.message
        # a frame is counted as planned after its outputs are published: its ExitDiagnostics can arrive first
        assert driver.spin_until(lambda: (lambda s: s.received == s.planned + s.dropped)(node.stats.snapshot()), 5.0), \
            f"unaccounted frames: {node.stats.snapshot()}"
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()
