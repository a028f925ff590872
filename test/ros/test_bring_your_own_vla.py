"""Bring your own VLA: a model written here against the public API alone, exported and run by deead_node.

Everything model-specific lives in this file: the torch model, its adapter (stem / layers / head), its
frame encoder (named in the manifest as `test.ros.test_bring_your_own_vla:TinyEncoder`) and its head
contract (per-step offsets, as ORION's planner emits them). The package has no code for it.
"""
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

from deead_ros.engines import HeadContract, TensorSpec, make_engine  # noqa: E402
from deead_ros.exit import ExitSettings, FullPolicy, PriorSettings, RouteAhead  # noqa: E402
from deead_ros.model.encoding import FrameInputs  # noqa: E402
from deead_lab.model.export_onnx import export_model  # noqa: E402
from deead_ros.runner import Runner  # noqa: E402
from test.ros.test_node import Driver, jpeg  # noqa: E402

SIZE, WIDTH, LAYERS, HORIZON, DT_S, SCALE_M = 32, 24, 3, 4, 0.25, 2.0


class TinyVLA(nn.Module):
    """Patch tokens of a small image + a speed token, residual MLP layers, offsets read at the last token."""

    def __init__(self) -> None:
        super().__init__()
        self.patches = nn.Conv2d(3, WIDTH, 8, stride=8)                      # (1, W, 4, 4)
        self.speed = nn.Linear(1, WIDTH)
        self.layers = nn.ModuleList(nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH), nn.GELU())
                                    for _ in range(LAYERS))
        self.readout = nn.Linear(WIDTH, HORIZON * 2)

    def stem(self, pixels: torch.Tensor, speed: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(pixels).flatten(2).transpose(1, 2)           # (1, 16, W)
        return torch.cat([tokens, self.speed(speed)[:, None]], dim=1)      # (1, 17, W)

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.readout(hidden[:, -1]).view(-1, HORIZON, 2)            # raw per-step offsets


class _Layer(nn.Module):
    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.block(hidden)


class _Method(nn.Module):
    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model, self.name = model, name

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return getattr(self.model, self.name)(*args)


class TinyAdapter:
    """deead_lab.model.adapters.LayeredAdapter for TinyVLA."""

    num_layers = LAYERS

    def __init__(self, model: TinyVLA) -> None:
        self.model = model.eval()

    def stem_inputs(self) -> dict[str, torch.Tensor]:
        return {"pixels": torch.zeros(1, 3, SIZE, SIZE), "speed": torch.zeros(1, 1)}

    def stem(self) -> nn.Module:
        return _Method(self.model, "stem")

    def layer(self, index: int) -> nn.Module:
        return _Layer(self.model.layers[index])

    def head(self) -> nn.Module:
        return _Method(self.model, "head")


class TinyEncoder:
    """deead_ros.model.encoding.FrameEncoder for TinyVLA: a nearest-neighbour thumbnail and the speed."""

    name: ClassVar[str] = f"{__name__}:TinyEncoder"
    accel_window_s = 0.5

    def __init__(self, size: int) -> None:
        self.size = size

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "TinyEncoder":
        return cls(int(config["size"]))

    def to_config(self) -> dict[str, Any]:
        return {"size": self.size}

    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("pixels", (1, 3, self.size, self.size), "float32"), TensorSpec("speed", (1, 1), "float32"))

    def encode(self, frame: FrameInputs, route: RouteAhead | None) -> dict[str, np.ndarray]:
        h, w = frame.image_rgb.shape[:2]
        rows, cols = np.arange(self.size) * h // self.size, np.arange(self.size) * w // self.size
        thumb = frame.image_rgb[rows][:, cols].astype(np.float32) / 255.0          # (S, S, 3)
        return {"pixels": np.ascontiguousarray(thumb.transpose(2, 0, 1)[None]),
                "speed": np.array([[frame.speed_mps / 10.0]], np.float32)}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyVLA()
    manifest = export_model(TinyAdapter(model), TinyEncoder(SIZE), HeadContract(HORIZON, DT_S, "offsets", SCALE_M),
                            tmp_path_factory.mktemp("tiny") / "onnx", model_version="tiny-vla 1", arch="tiny_vla",
                            export_command="test/ros/test_bring_your_own_vla.py", log=lambda line: None)
    return model, manifest


def test_torch_and_onnxruntime_agree_on_a_model_they_never_saw(tiny_model):
    model, manifest = tiny_model
    frame = FrameInputs(np.random.default_rng(1).integers(0, 256, (96, 160, 3), dtype=np.uint8), None, 7.0, 0.0)
    plans = [Runner(make_engine(backend, manifest), ExitSettings(first_checkpoint=1), PriorSettings())
             .plan(frame, policy=FullPolicy()).trace.trajectory_m for backend in ("torch", "onnxruntime")]
    np.testing.assert_allclose(plans[1], plans[0], atol=1e-4)
    feed = {k: torch.from_numpy(v) for k, v in TinyEncoder(SIZE).encode(frame, None).items()}
    with torch.no_grad():
        hidden = model.stem(**feed)
        for block in model.layers:
            hidden = hidden + block(hidden)
        expected = SCALE_M * model.head(hidden)[0].cumsum(dim=0).numpy()      # the head contract: offsets
    np.testing.assert_allclose(plans[0], expected, atol=1e-5)


def test_the_node_runs_it(tiny_model, ros_context):
    from deead_ros.ros.node import DeeadNode
    _, manifest = tiny_model
    node = DeeadNode(context=ros_context, parameter_overrides=[
        Parameter("model_file_path", value=str(manifest)), Parameter("exit.first_checkpoint", value=1),
        Parameter("exit.fixed_exit_layer", value=2)])
    driver = Driver(ros_context)
    driver.executor.add_node(node)
    try:
        driver.wait_for_node()
        for sec in (1, 2, 3):
            driver.send_frame(sec, data=jpeg(sec))
            key = (sec, 0)
            assert driver.spin_until(lambda key=key: key in driver.exits, 20.0), f"no plan for the frame at {sec} s"
        for sec in (1, 2, 3):
            exit_msg, path = driver.exits[(sec, 0)], driver.trajectories[(sec, 0)]
            assert exit_msg.num_layers == LAYERS and 1 <= exit_msg.exit_layer <= LAYERS
            assert exit_msg.model_version == "tiny-vla 1" and len(path.poses) == HORIZON
            assert all(np.isfinite([p.pose.position.x, p.pose.position.y]).all() for p in path.poses)
    finally:
        node.shutdown()
        node.destroy_node()
        driver.node.destroy_node()
