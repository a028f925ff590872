"""deead_node as a managed node, driven through the lifecycle_msgs services as a lifecycle manager would."""
import pytest

pytestmark = pytest.mark.ros

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from test.ros.test_node import FIRST_CHECKPOINT, Driver, plan_frames  # noqa: E402


class Manager:
    """Calls deead_node's ChangeState and GetState services (what `ros2 lifecycle set/get` do)."""

    def __init__(self, driver: Driver):
        self.driver = driver
        self.change = driver.node.create_client(ChangeState, "/deead_node/change_state")
        self.get = driver.node.create_client(GetState, "/deead_node/get_state")
        assert self.change.wait_for_service(timeout_sec=10.0) and self.get.wait_for_service(timeout_sec=10.0)

    def _call(self, client, request):
        future = client.call_async(request)
        assert self.driver.spin_until(future.done, 60.0), f"{client.srv_name} did not answer"
        return future.result()

    def set(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label


def lifecycle_statuses(driver: Driver) -> list:
    return [s for array in driver.diagnostics for s in array.status if s.name.endswith(": lifecycle")]


def managed_node(context, model, **values):
    from deead_ros.ros.node import DeeadNode
    overrides = [Parameter("autostart", value=False), Parameter("model_file_path", value=str(model)),
                 Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT),
                 Parameter("diagnostics.period_s", value=0.2),
                 *(Parameter(name, value=value) for name, value in values.items())]
    return DeeadNode(context=context, parameter_overrides=overrides)


def test_configure_activate_deactivate_cleanup_and_shutdown_through_the_services(small_model, ros_context):
    node = managed_node(ros_context, small_model)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    manager = Manager(driver)
    planned = lambda: node.stats.snapshot().planned  # noqa: E731
    try:
        assert manager.state() == "unconfigured" and node._runner is None, "autostart false: nothing loaded"
        assert not manager.set(Transition.TRANSITION_ACTIVATE), "activate needs configure first"
        assert manager.state() == "unconfigured", "a refused transition leaves the node as it was"
        assert driver.spin_until(lambda: any("waiting for configure" in s.message for s in lifecycle_statuses(driver)))

        assert manager.set(Transition.TRANSITION_CONFIGURE) and manager.state() == "inactive"
        assert node._runner is not None and node._runner.num_layers == 6
        assert manager.set(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        driver.wait_for_node()
        plan_frames(driver, [1, 2])
        assert driver.spin_until(lambda: lifecycle_statuses(driver)[-1].message == "active: planning")

        assert manager.set(Transition.TRANSITION_DEACTIVATE) and manager.state() == "inactive"
        before = planned()
        driver.send_frame(3)
        inactive = lambda: node.stats.snapshot().drops.get("inactive", 0)  # noqa: E731
        assert driver.spin_until(lambda: inactive() == 1, 10.0), "an inactive node still counts its inputs"
        assert planned() == before and (3, 0) not in driver.exits, "an inactive node plans nothing"
        snap = node.stats.snapshot()
        assert snap.received == snap.planned + snap.dropped, f"unaccounted frames: {snap}"

        assert manager.set(Transition.TRANSITION_ACTIVATE) and manager.state() == "active"
        plan_frames(driver, [4])

        assert manager.set(Transition.TRANSITION_DEACTIVATE) and manager.set(Transition.TRANSITION_CLEANUP)
        assert manager.state() == "unconfigured" and node._runner is None, "cleanup releases the engines"
        assert driver.spin_until(lambda: driver.camera.get_subscription_count() == 0, 10.0), "cleanup unsubscribes"

        assert manager.set(Transition.TRANSITION_CONFIGURE) and manager.set(Transition.TRANSITION_ACTIVATE)
        plan_frames(driver, [5])                          # configured again: the engines are loaded anew
        assert manager.set(Transition.TRANSITION_ACTIVE_SHUTDOWN) and manager.state() == "finalized"
        assert node._runner is None and node._worker is None
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()


def test_a_bad_model_at_configure_leaves_the_node_unconfigured_with_the_reason(small_model, tmp_path, ros_context):
    missing = tmp_path / "nothing" / "manifest.json"
    node = managed_node(ros_context, missing)
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    manager = Manager(driver)
    try:
        assert not manager.set(Transition.TRANSITION_CONFIGURE)
        assert manager.state() == "unconfigured" and node._runner is None
        assert driver.spin_until(lambda: any(s.level == b"\x02" and "missing" in s.message
                                             for s in lifecycle_statuses(driver)), 10.0), \
            "/diagnostics says why configure failed"
        assert not manager.set(Transition.TRANSITION_ACTIVATE)
        assert manager.set(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN) and manager.state() == "finalized"
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()


@pytest.mark.parametrize("state", ["unconfigured", "inactive", "active"])
def test_shutdown_is_clean_from_every_state(small_model, ros_context, state):
    node = managed_node(ros_context, small_model)
    steps = {"unconfigured": [], "inactive": [node.trigger_configure],
             "active": [node.trigger_configure, node.trigger_activate]}[state]
    for step in steps:
        step()
    assert node.lifecycle_state == state
    node.shutdown()
    assert node.lifecycle_state == "finalized" and node._runner is None and node._worker is None
    assert State.PRIMARY_STATE_FINALIZED == node._state_machine.current_state[0]
    node.destroy_node()


def test_autostart_configures_and_activates_in_the_constructor(small_model, ros_context):
    from deead_ros.errors import ConfigError
    from deead_ros.ros.node import DeeadNode
    node = DeeadNode(context=ros_context, parameter_overrides=[
        Parameter("model_file_path", value=str(small_model)),
        Parameter("exit.first_checkpoint", value=FIRST_CHECKPOINT)])
    try:
        assert node.lifecycle_state == "active"
    finally:
        node.shutdown()
        node.destroy_node()
    with pytest.raises(ConfigError, match="outside the model's layers"):
        DeeadNode(context=ros_context, parameter_overrides=[Parameter("model_file_path", value=str(small_model))])
