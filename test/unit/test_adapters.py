"""Adapters: a Llama-style LLM (ORION's Vicuna is one) splits into stem / layers / head like the demo VLA.

A tiny randomly initialised LlamaConfig (no download): the split model must equal the unsplit one,
and every part must export to ONNX and run in onnxruntime with the same numbers.
"""
import numpy as np
import pytest
import torch

from deead_ros.engines.manifest import HIDDEN_IN, HIDDEN_OUT, TRAJECTORY
from deead_lab.model.adapters import LayerRange, VLAAdapter
from deead_lab.model.export_onnx import export_chain
from deead_lab.model.vla import DeeadVLA, VLAConfig

transformers = pytest.importorskip("transformers", reason="transformers is pinned in requirements-lab.txt")
ort = pytest.importorskip("onnxruntime")
from deead_lab.model.adapters import LlamaAdapter  # noqa: E402  (after the skip)

SEQ_LEN = 12


@pytest.fixture(scope="module")
def llama():
    config = transformers.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


@pytest.fixture
def input_ids():
    return torch.randint(0, 96, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))


def run_split(adapter, inputs):
    hidden = [adapter.stem()(*inputs)]
    for i in range(adapter.num_layers):
        hidden.append(adapter.layer(i)(hidden[-1]))
    return hidden, adapter.head()(hidden[-1])


def test_split_llama_equals_the_unsplit_model(llama, input_ids):
    adapter = LlamaAdapter(llama, SEQ_LEN)
    with torch.no_grad():
        hidden, logits = run_split(adapter, (input_ids,))
        want = llama(input_ids, output_hidden_states=True)
    torch.testing.assert_close(logits, want.logits[:, -1], atol=1e-5, rtol=1e-5)
    for i in range(adapter.num_layers):     # hidden_states[i] is the input of layer i
        torch.testing.assert_close(hidden[i], want.hidden_states[i], atol=1e-5, rtol=1e-5)


def test_llama_layers_are_causal(llama, input_ids):
    adapter = LlamaAdapter(llama, SEQ_LEN)
    changed = input_ids.clone()
    changed[0, -1] = (changed[0, -1] + 1) % 96
    with torch.no_grad():
        a, _ = run_split(adapter, (input_ids,))
        b, _ = run_split(adapter, (changed,))
    torch.testing.assert_close(a[-1][:, :-1], b[-1][:, :-1])     # earlier tokens never see the last one
    assert not torch.allclose(a[-1][:, -1], b[-1][:, -1])


def test_llama_needs_eager_attention(llama):
    llama.config._attn_implementation = "sdpa"
    try:
        with pytest.raises(ValueError, match="attn_implementation='eager'"):
            LlamaAdapter(llama, SEQ_LEN)
    finally:
        llama.config._attn_implementation = "eager"


def test_llama_exports_per_layer_and_runs_in_onnxruntime(llama, input_ids, tmp_path):
    adapter = LlamaAdapter(llama, SEQ_LEN)
    files = export_chain(adapter, tmp_path, fused=False, log=lambda line: None)
    assert len(files["layers"]) == adapter.num_layers

    def open_(name):
        return ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])

    hidden = open_("stem.onnx").run([HIDDEN_OUT], {"input_ids": input_ids.numpy()})[0]
    for i in range(adapter.num_layers):
        hidden = open_(f"layer_{i:02d}.onnx").run([HIDDEN_OUT], {HIDDEN_IN: hidden})[0]
    logits = open_("head.onnx").run([TRAJECTORY], {HIDDEN_IN: hidden})[0]
    with torch.no_grad():
        want = llama(input_ids).logits[:, -1].numpy()
    np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)


def test_vla_adapter_and_layer_range_compose_to_the_model():
    torch.manual_seed(0)
    model = DeeadVLA(VLAConfig(n_layer=3, d_model=32, n_head=2, stem_channels=(8, 8, 16), mlp_ratio=2)).eval()
    adapter = VLAAdapter(model)
    inputs = tuple(torch.rand_like(t.float()).to(t.dtype) for t in adapter.stem_inputs().values())
    with torch.no_grad():
        fused = adapter.head()(LayerRange(adapter, 0, 3)(adapter.stem()(*inputs)))
        torch.testing.assert_close(run_split(adapter, inputs)[1], model(*inputs))
        torch.testing.assert_close(fused, model(*inputs))
