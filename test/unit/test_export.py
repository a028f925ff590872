"""deead_export: per-layer ONNX files + manifest, and the errors a damaged export gives."""
import json
import shutil

import onnx
import pytest

from deead_ros.engines.manifest import MANIFEST_FILE, load_manifest
from deead_ros.errors import ModelFileError
from deead_ros.model.export_onnx import OPSET, export_random, main
from deead_ros.model.vla import VLAConfig

SMALL = VLAConfig(n_layer=4, d_model=32, n_head=2, stem_channels=(8, 8, 16), mlp_ratio=2)


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    export_random(out, SMALL, log=lambda line: None)
    return out


@pytest.fixture
def copy(export_dir, tmp_path):
    """A private copy of the export that a test may damage."""
    target = tmp_path / "model"
    shutil.copytree(export_dir, target)
    return target


def test_manifest_lists_every_file_with_io_and_metadata(export_dir):
    m = load_manifest(export_dir / MANIFEST_FILE)
    assert (m.num_layers, m.horizon, m.dt_s, m.opset) == (4, 6, 0.5, OPSET)
    assert [f.path.name for f in m.engine_files] == ["stem.onnx", *(f"layer_{i:02d}.onnx" for i in range(4)),
                                                     "head.onnx"]
    assert m.fused is not None and m.fused.path.name == "fused.onnx"
    hidden = (1, SMALL.n_tokens, SMALL.d_model)
    assert [(t.name, t.shape, t.dtype) for t in m.stem.inputs] == [
        ("image", (1, 3, 96, 160), "float32"), ("route", (1, 12, 2), "float32"), ("ego", (1, 4), "float32"),
        ("command_ids", (1, 8), "int32")]
    for f in (*m.layers, m.fused):
        assert [(t.name, t.shape) for t in (*f.inputs, *f.outputs)] == [("hidden_in", hidden), ("hidden_out", hidden)]
    assert [(t.name, t.shape) for t in m.head.outputs] == [("trajectory", (1, 6, 2))]
    assert m.inputs.vocabulary[:2] == ("<pad>", "<unk>") and m.model_version.startswith("deead-vla-1")
    assert m.export_command.startswith("deead_export --weights ")


def test_graphs_are_single_file_static_and_checked(export_dir):
    for path in sorted(export_dir.glob("*.onnx")):
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model, full_check=True)
        assert not any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer), path.name
        assert model.opset_import[0].version == OPSET
        for value in (*model.graph.input, *model.graph.output):
            assert all(d.dim_value > 0 for d in value.type.tensor_type.shape.dim), f"{path.name}: {value.name}"
    assert not [p for p in export_dir.iterdir() if p.suffix == ".data"]


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:1000]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"\x00"), "modified after export"),
])
def test_damaged_files_are_named_with_the_fix(copy, damage, message):
    damage(copy / "layer_02.onnx")
    with pytest.raises(ModelFileError, match=message) as err:
        load_manifest(copy)
    assert "layer_02.onnx" in str(err.value) and "re-run `deead_export --weights" in str(err.value)


def test_missing_or_foreign_manifest_says_how_to_export(copy):
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(ModelFileError, match="another version.*deead_export"):
        load_manifest(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ModelFileError, match="manifest.json is missing; export the model first"):
        load_manifest(copy)


def test_model_exported_for_another_input_encoding_is_refused(copy):
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    ego = next(t for t in manifest["files"]["stem"]["inputs"] if t["name"] == "ego")
    ego["shape"] = [1, 3]                                   # a model from before the acceleration input
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="another input encoding.*deead_export"):
        load_manifest(copy)


def test_cli_reports_missing_weights_and_exports(tmp_path, export_dir, capsys):
    assert main(["--weights", str(tmp_path / "nowhere" / "vla.safetensors"), "--out", str(tmp_path / "o")]) == 1
    assert "config.json is missing" in capsys.readouterr().out
    assert main(["--weights", str(export_dir / "vla.safetensors"), "--out", str(tmp_path / "o"), "--no-fused"]) == 0
    m = load_manifest(tmp_path / "o")
    assert m.fused is None and (tmp_path / "o" / "vla.safetensors").is_file()
    assert "[ 6/6] head.onnx" in capsys.readouterr().out
