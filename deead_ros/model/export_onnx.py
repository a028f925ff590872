"""deead_export: a layered model -> stem.onnx, layer_NN.onnx, head.onnx, fused.onnx + manifest.json.

Every graph has static shapes at batch 1, fp32, weights inside the file (no external data), and is
checked with onnx.checker. Layer graphs all read `hidden_in` and write `hidden_out`, so any backend
can chain them through two ping-pong buffers. fused.onnx holds all layers in one graph: the baseline
that bench/bench_chain.py compares the chain against.

Uses torch's TorchScript exporter (`dynamo=False`): in torch 2.13 it still works, is deterministic and
takes well under a second per layer; the dynamo exporter took ~6 s per graph here.
"""
from __future__ import annotations

import argparse
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable

import onnx
import torch
from torch import nn

from deead_ros.engines.inputs import InputSpec
from deead_ros.engines.manifest import (HIDDEN_IN, HIDDEN_OUT, MANIFEST_FILE, TRAJECTORY, TensorSpec, file_record,
                                        write_manifest)
from deead_ros.errors import DeeadError
from deead_ros.model.adapters import LayeredAdapter, LayerRange, VLAAdapter
from deead_ros.model.vla import DeeadVLA, VLAConfig
from deead_ros.model.weights import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, save_pretrained

OPSET = 17        # LayerNormalization is native from 17; TensorRT 8.6+ and 10.x parse it


def export_module(module: nn.Module, inputs: dict[str, torch.Tensor], output_names: list[str],
                  path: Path, opset: int = OPSET) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Export one module to a single-file, static-shape ONNX graph and check it.

    Returns:
        The graph's (inputs, outputs) as read back from the written file.
    """
    with warnings.catch_warnings():      # the TorchScript exporter announces its deprecation on every call
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        with torch.no_grad():
            torch.onnx.export(module.eval(), tuple(inputs.values()), str(path), dynamo=False, opset_version=opset,
                              input_names=list(inputs), output_names=output_names, do_constant_folding=True)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    return _io_specs(graph.graph.input), _io_specs(graph.graph.output)


def _io_specs(values) -> tuple[TensorSpec, ...]:
    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_value for d in t.shape.dim)
        assert all(n > 0 for n in shape), f"{v.name} has a dynamic dimension {shape}; export needs static shapes"
        specs.append(TensorSpec(v.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return tuple(specs)


def export_chain(adapter: LayeredAdapter, out_dir: Path, *, fused: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, object]:
    """Export the adapter's stem, each layer, the head and (optionally) the fused layers into out_dir.

    Returns:
        The manifest's "files" entries for what was written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        hidden = adapter.stem()(*adapter.stem_inputs().values())          # (1, S, D) example
    jobs: list[tuple[str, nn.Module, dict[str, torch.Tensor], str]] = [
        ("stem", adapter.stem(), adapter.stem_inputs(), HIDDEN_OUT),
        *((f"layer_{i:02d}", adapter.layer(i), {HIDDEN_IN: hidden}, HIDDEN_OUT) for i in range(adapter.num_layers)),
        ("head", adapter.head(), {HIDDEN_IN: hidden}, TRAJECTORY),
    ]
    if fused:
        jobs.append(("fused", LayerRange(adapter, 0, adapter.num_layers), {HIDDEN_IN: hidden}, HIDDEN_OUT))
    records: dict[str, object] = {"layers": []}
    for n, (role, module, inputs, output) in enumerate(jobs, start=1):
        t0 = time.perf_counter()
        path = out_dir / f"{role}.onnx"
        io = export_module(module, inputs, [output], path)
        record = file_record(path, out_dir, *io)
        if role.startswith("layer_"):
            records["layers"].append(record)
        else:
            records[role] = record
        log(f"[{n:2d}/{len(jobs)}] {path.name:14s} {record['bytes'] / 1e6:6.2f} MB  {time.perf_counter() - t0:5.2f} s")
    return records


def export_vla(weights: Path, out_dir: Path, *, fused: bool = True, log: Callable[[str], None] = print) -> Path:
    """Export the demo VLA at `weights` (config.json beside it) into out_dir; return manifest.json's path.

    The weights and config are copied next to the graphs so that the directory is self-contained
    (the torch reference backend loads them from there).
    """
    weights, out_dir = weights.resolve(), out_dir.resolve()
    pretrained = load_pretrained(weights)
    cfg = pretrained.model.cfg
    log(f"exporting {pretrained.model_version} ({cfg.n_layer} layers, {cfg.n_tokens} tokens x {cfg.d_model}) "
        f"to {out_dir}")
    files = export_chain(VLAAdapter(pretrained.model), out_dir, fused=fused, log=log)
    for name, source in ((WEIGHTS_FILE, weights), (CONFIG_FILE, weights.parent / CONFIG_FILE)):
        if source.resolve() != (out_dir / name).resolve():
            shutil.copyfile(source, out_dir / name)
    files["weights"] = file_record(out_dir / WEIGHTS_FILE, out_dir)
    files["config"] = file_record(out_dir / CONFIG_FILE, out_dir)
    manifest = out_dir / MANIFEST_FILE
    write_manifest({
        "model_version": pretrained.model_version, "num_layers": cfg.n_layer, "horizon": cfg.horizon,
        "dt_s": cfg.dt_s, "opset": OPSET, "inputs": pretrained.inputs.to_dict(),
        "export_command": f"deead_export --weights {weights} --out {out_dir}", "files": files,
    }, manifest)
    log(f"wrote {manifest}")
    return manifest


def export_random(out_dir: Path, cfg: VLAConfig = VLAConfig(), *, seed: int = 0, fused: bool = True,
                  log: Callable[[str], None] = print) -> Path:
    """Export a randomly initialised model (its weights saved into out_dir too); return manifest.json's path.

    For tests and benchmarks where no trained weights exist: same shapes and cost as a trained model.
    """
    torch.manual_seed(seed)
    weights = save_pretrained(DeeadVLA(cfg), InputSpec(), out_dir, model_version=f"deead-vla-1 random seed {seed}")
    return export_vla(weights, out_dir, fused=fused, log=log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_export", description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, required=True,
                        help="vla.safetensors (config.json must sit beside it), e.g. models/demo/vla.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. build/models/demo")
    parser.add_argument("--no-fused", action="store_true", help="skip fused.onnx (only the benchmark uses it)")
    args = parser.parse_args(argv)
    try:
        export_vla(args.weights, args.out, fused=not args.no_fused)
    except DeeadError as err:
        print(f"deead_export: error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
