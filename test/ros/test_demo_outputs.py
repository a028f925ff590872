"""make demo measures its own node only: a private ROS domain unless one is chosen, and figures that cannot be its
node's (another deead_node on the same domain) are refused instead of written to docs/demo.json."""
import pytest

pytestmark = pytest.mark.ros

from deead_ros.ros.demo import check_own_outputs, private_domain  # noqa: E402


def figures(planned: int, early_exits: int, sent: int = 810) -> dict:
    return {"frames_sent": sent, "frames_planned": planned, "early_exits": early_exits}


def test_plausible_figures_pass():
    check_own_outputs(figures(810, 0), "full", "7")
    check_own_outputs(figures(803, 355), "deead", "7")


@pytest.mark.parametrize("planned, early_exits, policy", [(928, 355, "deead"), (736, 34, "full")])
def test_another_nodes_outputs_are_refused(planned, early_exits, policy):
    with pytest.raises(RuntimeError, match="another deead_node publishes on ROS domain 7"):
        check_own_outputs(figures(planned, early_exits), policy, "7")


def test_a_chosen_domain_is_kept_and_none_gets_a_private_one(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "42")
    assert private_domain() == "42"
    monkeypatch.delenv("ROS_DOMAIN_ID")
    assert 1 <= int(private_domain()) <= 100
