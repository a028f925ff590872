"""A route published with every frame but recorded after it: deead_eval plans each frame with the route of its
instant, as when the route is recorded before the camera (the node waits for it the same way: test_instants)."""
import numpy as np

from test.conftest import REPO_ROOT

EPISODE = REPO_ROOT / "test" / "fixtures" / "metadrive_episode.npz"
ROUTE_DELAY_S = 0.03


def offline_plans(model, bag) -> dict:
    from deead_ros.engines import make_engine
    from deead_ros.exit import ExitSettings, PriorSettings
    from deead_ros.frame_assembly import model_image_hw
    from deead_ros.runner import Runner
    from deead_lab.eval import bag_frames
    runner = Runner(make_engine("onnxruntime", model, num_threads=1), ExitSettings(first_checkpoint=2),
                    PriorSettings())
    return {frame.camera_stamp_s: runner.plan(frame.inputs, ego_motion_known=frame.ego_motion_known).trajectory_m
            for frame in bag_frames(bag, runner.encoder.accel_window_s, model_image_hw(runner.encoder))}


def test_deead_eval_waits_for_the_route_recorded_after_its_frame(small_model, tmp_path):
    from deead_lab.make_bag import write_bag
    write_bag([EPISODE], tmp_path / "before")
    write_bag([EPISODE], tmp_path / "after", route_delay_s=ROUTE_DELAY_S)
    before, after = offline_plans(small_model, tmp_path / "before"), offline_plans(small_model, tmp_path / "after")
    assert len(before) == len(after) > 10 and set(before) == set(after)
    # The route's period is known from its first two messages: the frames before the second route cannot know
    # that one is coming (the first goes without, the second with the first route).
    stamps = sorted(before)
    differ = [s for s in stamps[2:] if not np.allclose(before[s], after[s], atol=1e-5)]
    assert not differ, f"{len(differ)} of {len(stamps) - 2} frames planned with another route when it came after them"
