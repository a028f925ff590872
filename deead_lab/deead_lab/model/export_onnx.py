"""deead_export: a layered model -> stem.onnx, layer_NN.onnx, head.onnx, fused.onnx, torch/ + manifest.json.

Every graph has static shapes at batch 1, fp32, weights inside the file (no external data), and is
checked with onnx.checker. Layer graphs all read `hidden_in` and write `hidden_out`, so any backend
can chain them through two ping-pong buffers. fused.onnx holds all layers in one graph: the baseline
that bench/bench_chain.py compares the chain against. torch/ holds the same parts as `torch.export`
programs, which the torch reference backend runs without the model's Python class.

`export_model` is the public entry for any VLA: an adapter (its stem / layers / head), the encoder
that feeds its stem, and the head contract. The manifest it writes names both, so the directory runs
in deead_node, deead_eval and the benchmarks with no code specific to the model.

Uses torch's TorchScript exporter (`dynamo=False`): in torch 2.13 it still works, is deterministic and
takes well under a second per layer; the dynamo exporter took ~6 s per graph here.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import onnx
import torch
from torch import nn

from deead_ros.engines.manifest import (HIDDEN_IN, HIDDEN_OUT, MANIFEST_FILE, TRAJECTORY, HeadContract, TensorSpec,
                                        file_record, write_manifest)
from deead_ros.errors import DeeadError, ModelFileError
from deead_lab.model.adapters import LayeredAdapter, LayerRange
from deead_lab.model.architectures import ARCHITECTURES, DEFAULT_ARCH
from deead_ros.model.encoding import FrameEncoder, InputSpec, check_encoder_matches, sensors_of
from deead_lab.model.weights import CONFIG_FILE, load_pretrained, save_pretrained

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


def export_program(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path) -> None:
    """Save one module as a `torch.export` program (the torch backend loads it without the model class).

    A part that calls one method of the whole model (adapters.MethodModule) would carry every weight of
    the model; the weights its graph never reads are dropped and the part exported again.
    """
    args = tuple(inputs.values())
    with torch.no_grad():
        graph = torch.export.export(module.eval(), args).module()
        for node in list(graph.graph.nodes):
            if node.op == "get_attr" and not node.users:
                graph.graph.erase_node(node)
        graph.recompile()
        read = {node.target for node in graph.graph.nodes if node.op == "get_attr"}
        for name in [n for n, _ in graph.named_parameters()] + [n for n, _ in graph.named_buffers()]:
            if name not in read:
                owner, _, leaf = name.rpartition(".")
                delattr(graph.get_submodule(owner), leaf)
        program = torch.export.export(graph, args)
    torch.export.save(program, str(path))


def export_chain(adapter: LayeredAdapter, out_dir: Path, *, fused: bool = True, torch_programs: bool = True,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Export the adapter's stem, each layer, the head and (optionally) the fused layers into out_dir.

    Returns:
        The manifest's "files" entries for what was written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        hidden = adapter.stem()(*adapter.stem_inputs().values())          # (1, S, D) example
    parts: list[tuple[str, nn.Module, dict[str, torch.Tensor], str]] = [
        ("stem", adapter.stem(), adapter.stem_inputs(), HIDDEN_OUT),
        *((f"layer_{i:02d}", adapter.layer(i), {HIDDEN_IN: hidden}, HIDDEN_OUT) for i in range(adapter.num_layers)),
        ("head", adapter.head(), {HIDDEN_IN: hidden}, TRAJECTORY),
    ]
    jobs = list(parts) + ([("fused", LayerRange(adapter, 0, adapter.num_layers), {HIDDEN_IN: hidden}, HIDDEN_OUT)]
                          if fused else [])
    records: dict[str, Any] = {"layers": []}
    total = len(jobs) + (len(parts) if torch_programs else 0)
    for n, (role, module, inputs, output) in enumerate(jobs, start=1):
        t0 = time.perf_counter()
        path = out_dir / f"{role}.onnx"
        io = export_module(module, inputs, [output], path)
        record = file_record(path, out_dir, *io)
        if role.startswith("layer_"):
            records["layers"].append(record)
        else:
            records[role] = record
        log(f"[{n:2d}/{total}] {path.name:14s} {record['bytes'] / 1e6:6.2f} MB  {time.perf_counter() - t0:5.2f} s")
    if torch_programs:
        (out_dir / "torch").mkdir(exist_ok=True)
        programs: dict[str, Any] = {"layers": []}
        for n, (role, module, inputs, _) in enumerate(parts, start=len(jobs) + 1):
            t0 = time.perf_counter()
            path = out_dir / "torch" / f"{role}.pt2"
            export_program(module, inputs, path)
            record = file_record(path, out_dir)
            if role.startswith("layer_"):
                programs["layers"].append(record)
            else:
                programs[role] = record
            log(f"[{n:2d}/{total}] torch/{path.name:8s} {record['bytes'] / 1e6:6.2f} MB  "
                f"{time.perf_counter() - t0:5.2f} s")
        records["torch"] = programs
    return records


def export_model(adapter: LayeredAdapter, encoder: FrameEncoder, head_contract: HeadContract, out_dir: Path, *,
                 model_version: str, arch: str, export_command: str, extra: dict[str, Path] | None = None,
                 fused: bool = True, torch_programs: bool = True, log: Callable[[str], None] = print) -> Path:
    """Export any layered VLA into a self-describing directory; return its manifest.json.

    Args:
        adapter: the model cut at its layer boundaries (LayeredAdapter).
        encoder: turns a frame into the stem's named inputs; checked against the exported stem.
        head_contract: how the head's raw output becomes waypoints in metres.
        extra: other files to copy beside the graphs, by role (e.g. the weights the export came from).
    """
    problem = head_contract.problem()
    if problem:
        raise ModelFileError(f"head contract of {arch}: {problem}")
    out_dir = out_dir.resolve()
    files = export_chain(adapter, out_dir, fused=fused, torch_programs=torch_programs, log=log)
    stem_inputs = tuple(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in files["stem"]["inputs"])
    check_encoder_matches(encoder, stem_inputs, f"exporting {arch}")
    head_shape = tuple(files["head"]["outputs"][0]["shape"])
    if head_shape != (1, head_contract.horizon, 2):
        raise ModelFileError(f"the head of {arch} outputs {head_shape}; head_contract.horizon={head_contract.horizon} "
                             f"needs (1, {head_contract.horizon}, 2)")
    files["extra"] = {}
    for role, source in (extra or {}).items():
        target = out_dir / source.name
        if source.resolve() != target:
            shutil.copyfile(source, target)
        files["extra"][role] = file_record(target, out_dir)
    manifest = out_dir / MANIFEST_FILE
    write_manifest({
        "model_version": model_version, "arch": arch, "num_layers": adapter.num_layers, "opset": OPSET,
        "encoder": {"name": encoder.name, "config": encoder.to_config()}, "head_contract": head_contract.to_dict(),
        "sensors": sensors_of(encoder).to_dict(), "export_command": export_command, "files": files,
    }, manifest)
    log(f"wrote {manifest}")
    return manifest


def export_pretrained(weights: Path, out_dir: Path, *, fused: bool = True,
                      log: Callable[[str], None] = print) -> Path:
    """Export a saved model of a registered architecture (config.json beside the weights); return manifest.json.

    The weights and config are copied next to the graphs so that the directory records what it came from.
    """
    weights, out_dir = weights.resolve(), out_dir.resolve()
    pretrained = load_pretrained(weights)
    model, arch = pretrained.model, pretrained.arch
    log(f"exporting {pretrained.model_version} ({arch}, {ARCHITECTURES[arch].adapter(model).num_layers} layers) "
        f"to {out_dir}")
    return export_model(
        ARCHITECTURES[arch].adapter(model), ARCHITECTURES[arch].encoder(model.cfg, pretrained.inputs),
        model.head_contract(), out_dir,
        model_version=pretrained.model_version, arch=arch,
        export_command=f"deead_export --weights {weights} --out {out_dir}",
        extra={"weights": weights, "config": weights.parent / CONFIG_FILE}, fused=fused, log=log)


def export_random(out_dir: Path, cfg: object | None = None, *, arch: str = DEFAULT_ARCH, seed: int = 0,
                  fused: bool = True, inputs: InputSpec = InputSpec(), log: Callable[[str], None] = print) -> Path:
    """Export a randomly initialised model (its weights saved into out_dir/weights too); return manifest.json.

    For tests and benchmarks where no trained weights exist: same shapes and cost as a trained model.
    `cfg` (a registered architecture's config) picks the architecture; else `arch` with its default config.
    The input spec takes the config's image size.
    """
    if cfg is not None:
        arch = next(name for name, a in ARCHITECTURES.items() if type(cfg) is a.config)
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch].model(cfg if cfg is not None else ARCHITECTURES[arch].config())
    height, width = model.cfg.image_hw
    inputs = replace(inputs, image_hw=(height, width))
    weights = save_pretrained(model, inputs, out_dir / "weights", model_version=f"{arch} random seed {seed}")
    return export_pretrained(weights, out_dir, fused=fused, log=log)


def layer_count_field(cfg: object) -> str:
    """The config field that holds the decoder's layer count (n_layer, or Hugging Face's num_hidden_layers)."""
    return next(name for name in ("n_layer", "num_hidden_layers") if hasattr(cfg, name))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_export", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCH,
                        help="architecture of a random model (without --weights); with --weights, config.json says")
    parser.add_argument("--weights", type=Path,
                        help="vla.safetensors (config.json beside it), e.g. models/demo/vla.safetensors; "
                             "default: random weights of --arch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--layers", type=int, help="decoder layers of a random model (default: the architecture's)")
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. build/models/demo")
    parser.add_argument("--no-fused", action="store_true", help="skip fused.onnx (only the benchmark uses it)")
    args = parser.parse_args(argv)
    try:
        if args.weights:
            export_pretrained(args.weights, args.out, fused=not args.no_fused)
        else:
            cfg = ARCHITECTURES[args.arch].config()
            if args.layers:
                cfg = replace(cfg, **{layer_count_field(cfg): args.layers})
            export_random(args.out, cfg, seed=args.seed, fused=not args.no_fused)
    except DeeadError as err:
        print(f"deead_export: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
