"""The ORION-shaped Llama VLA: token layout, causal decoder, shared planning head, and the per-layer split.

A 4-layer model at the default widths (the real S = 82 token layout), random weights, no download:
the split model must equal the unsplit one, and every part must export to ONNX and run in
onnxruntime with the same numbers.
"""
import numpy as np
import pytest
import torch

from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT, TRAJECTORY
from deead_lab.model.export_onnx import export_chain

pytest.importorskip("transformers", reason="transformers is pinned in requirements-lab.txt")
ort = pytest.importorskip("onnxruntime")
from deead_lab.model.llama_vla import LlamaVLA, LlamaVLAAdapter, LlamaVLAConfig  # noqa: E402  (after the skip)

LAYERS = 4


@pytest.fixture(scope="module")
def model() -> LlamaVLA:
    torch.manual_seed(0)
    return LlamaVLA(LlamaVLAConfig(num_hidden_layers=LAYERS)).eval()


def random_inputs(cfg: LlamaVLAConfig, batch: int = 1, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, 3, *cfg.image_hw, generator=g),
            "route": torch.randn(batch, cfg.route_points, 2, generator=g),
            "ego": torch.randn(batch, 4, generator=g),
            "command_ids": torch.randint(1, cfg.vocab_size, (batch, cfg.max_command_tokens), generator=g,
                                         dtype=torch.int32)}


def run_split(adapter: LlamaVLAAdapter, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden after the last layer, head output) through stem -> layer 0 .. L-1 -> head."""
    hidden = adapter.stem()(*inputs.values())
    for i in range(adapter.num_layers):
        hidden = adapter.layer(i)(hidden)
    return hidden, adapter.head()(hidden)


def test_default_config_is_orion_shaped():
    cfg = LlamaVLAConfig()
    assert cfg.num_hidden_layers == 32
    assert cfg.image_grid == (6, 10)
    assert cfg.n_tokens == 60 + 12 + 1 + 8 + 1
    assert LlamaVLAConfig.from_dict(cfg.to_dict()) == cfg


def test_shapes(model):
    cfg = model.cfg
    inputs = random_inputs(cfg, batch=2)
    with torch.no_grad():
        hidden = model.stem(*inputs.values())
        raw = model(*inputs.values())
        every = model.raw_at_all_layers(*inputs.values())
    assert hidden.shape == (2, cfg.n_tokens, cfg.hidden_size)
    assert raw.shape == (2, cfg.horizon, 2)
    assert every.shape == (2, LAYERS, cfg.horizon, 2)
    torch.testing.assert_close(every[:, -1], raw, atol=1e-6, rtol=1e-5)   # the last exit is full depth


def test_random_weights_give_finite_modest_waypoints(model):
    with torch.no_grad():
        every = model.raw_at_all_layers(*random_inputs(model.cfg, batch=4).values())
    contract = model.head_contract()
    metres = np.stack([contract.waypoints(raw) for raw in every.reshape(-1, model.cfg.horizon, 2).numpy()])
    assert np.isfinite(metres).all()
    assert np.abs(metres).max() < 20.0, "random init should not plan far-away waypoints"


def test_the_head_contract_accumulates_offsets():
    contract = LlamaVLA(LlamaVLAConfig(num_hidden_layers=1, vit_layers=1)).head_contract()
    assert (contract.form, contract.scale_m, contract.horizon, contract.dt_s) == ("offsets", 5.0, 6, 0.5)
    raw = np.array([[1.0, 0.0], [1.0, 0.2], [0.5, -0.2], [0, 0], [0, 0], [0, 0]], np.float32)
    np.testing.assert_allclose(contract.waypoints(raw)[:3], [[5.0, 0.0], [10.0, 1.0], [12.5, 0.0]], atol=1e-6)


def test_adapter_composes_to_the_model(model):
    adapter = LlamaVLAAdapter(model)
    assert list(adapter.stem_inputs()) == ["image", "route", "ego", "command_ids"]
    inputs = random_inputs(model.cfg)
    with torch.no_grad():
        _, raw = run_split(adapter, inputs)
        torch.testing.assert_close(raw, model(*inputs.values()), atol=1e-5, rtol=0)


def test_decoder_is_causal_and_the_plan_token_sees_everything(model):
    adapter = LlamaVLAAdapter(model)
    inputs = random_inputs(model.cfg)
    last_word = dict(inputs, command_ids=inputs["command_ids"].clone())
    last_word["command_ids"][0, -1] = last_word["command_ids"][0, -1] % (model.cfg.vocab_size - 1) + 1
    image = dict(inputs, image=-inputs["image"])                          # the first tokens
    with torch.no_grad():
        h, raw = run_split(adapter, inputs)
        h_word, raw_word = run_split(adapter, last_word)
        _, raw_image = run_split(adapter, image)
    torch.testing.assert_close(h_word[:, :-2], h[:, :-2])                # no token sees a later one
    assert not torch.allclose(raw_word, raw), "the plan token must see the command word before it"
    assert not torch.allclose(raw_image, raw), "the plan token must see the image patches"


def test_chain_exports_and_matches_in_onnxruntime(model, tmp_path):
    adapter = LlamaVLAAdapter(model)
    files = export_chain(adapter, tmp_path, fused=True, log=lambda line: None)
    assert len(files["layers"]) == LAYERS

    def open_(name: str):  # onnxruntime is imported by importorskip: its types are not known statically
        return ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])

    inputs = random_inputs(model.cfg)
    stem_out = open_("stem.onnx").run([HIDDEN_OUT], {k: v.numpy() for k, v in inputs.items()})[0]
    hidden = stem_out
    for i in range(LAYERS):
        hidden = open_(f"layer_{i:02d}.onnx").run([HIDDEN_OUT], {HIDDEN_IN: hidden})[0]
    raw = open_("head.onnx").run([TRAJECTORY], {HIDDEN_IN: hidden})[0]
    fused = open_("fused.onnx").run([HIDDEN_OUT], {HIDDEN_IN: stem_out})[0]
    with torch.no_grad():
        want_hidden, want_raw = run_split(adapter, inputs)
    np.testing.assert_allclose(hidden, want_hidden.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(fused, want_hidden.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(raw, want_raw.numpy(), atol=1e-4, rtol=0)
