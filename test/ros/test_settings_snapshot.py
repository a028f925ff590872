"""deead_node reads its settings snapshot once per frame: a parameter change while a frame is in flight applies
from the next frame, never half to this one (delta and max_checks together)."""
import pytest

from deead_ros.exit import ExitSettings

pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

from test.ros.test_node import FIRST_CHECKPOINT, NUM_LAYERS, Driver, plan_frames  # noqa: E402


def test_a_parameter_change_mid_frame_never_mixes_old_and_new_settings_in_one_frame(small_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("model_file_path", value=str(small_model)),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("exit.delta_m", value=20.0), Parameter("exit.max_checks", value=1)]
    node = DeeadNode(context=ros_context, parameter_overrides=overrides)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    runner = node._runner
    assert runner is not None
    plan, seen = runner.plan, list[ExitSettings]()     # the real plan, and the exit settings of each frame it was given

    def plan_with_a_change_in_flight(*args, **kwargs):
        """The real plan; on the first frame, the parameters change after its snapshot was read."""
        if not seen:
            changed = node.set_parameters_atomically([Parameter("exit.delta_m", value=0.0),
                                                      Parameter("exit.max_checks", value=0)])
            assert changed.successful, changed.reason
        seen.append(kwargs["settings"].exit)
        return plan(*args, **kwargs)

    runner.plan = plan_with_a_change_in_flight    # type: ignore[method-assign]   # the worker calls runner.plan
    try:
        driver.wait_for_node()
        first, second = plan_frames(driver, [1, 2])
        assert node._config.runner.exit.delta_m == 0.0, "the change was applied"
        assert [(s.delta_m, s.max_checks) for s in seen] == [(20.0, 1), (0.0, 0)], \
            "the frame in flight keeps the snapshot it read (both values old), the next one reads the new one"
        assert (first.delta_m, first.exit_layer, first.exited_early) == (20.0, FIRST_CHECKPOINT, True), \
            "the published diagnostics say the delta the frame was planned with"
        assert (second.delta_m, second.exit_layer) == (0.0, NUM_LAYERS)
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()
