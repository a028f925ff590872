"""deead_export: per-layer ONNX files, torch programs + a self-describing manifest, and the errors a damaged
or incomplete export gives at start-up."""
import json
import shutil

import onnx
import pytest

from deead_ros.engines import make_engine
from deead_ros.engines.manifest import MANIFEST_FILE, load_manifest
from deead_ros.errors import ConfigError, ModelFileError
from deead_ros.exit import ExitSettings, PriorSettings
from deead_lab.model.export_onnx import OPSET, export_random, main
from deead_lab.model.vla import VLAConfig
from deead_ros.runner import Runner

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
    assert m.encoder.name == "driving_frame" and m.encoder.config["vocabulary"][:2] == ["<pad>", "<unk>"]
    assert (m.head_contract.form, m.head_contract.scale_m, m.arch) == ("absolute", 1.0, "deead_vla")
    assert [f.path.name for f in m.torch] == ["stem.pt2", *(f"layer_{i:02d}.pt2" for i in range(4)), "head.pt2"]
    assert m.model_version.startswith("deead_vla random") and m.export_command.startswith("deead_export --weights ")


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
    with pytest.raises(ModelFileError, match="field format is 99, this version of deead_ros reads format 2"):
        load_manifest(copy)
    (copy / MANIFEST_FILE).unlink()
    with pytest.raises(ModelFileError, match="manifest.json is missing; export the model first"):
        load_manifest(copy)


def edit(copy, change):
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    change(manifest)
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))


@pytest.mark.parametrize("change, message", [
    (lambda m: m["head_contract"].pop("form"), "field head_contract.form is missing"),
    (lambda m: m["head_contract"].update(horizon=0), "horizon=0 must be >= 1"),
    (lambda m: m["head_contract"].update(dt_s=float("nan")), "dt_s=nan must be a finite time step"),
    (lambda m: m["head_contract"].update(dt_s=-0.5), "dt_s=-0.5 must be a finite time step"),
    (lambda m: m["head_contract"].update(form="polar"), "form='polar' is unknown; expected one of absolute, offsets"),
    (lambda m: m["head_contract"].update(horizon=8), r"files.head.outputs\[0\].shape is \[1, 6, 2\]"),
    (lambda m: m.update(num_layers=5), "num_layers is 5 but files.layers lists 4"),
    (lambda m: m["encoder"].pop("config"), "field encoder.config is missing"),
    (lambda m: m.update(num_layers="4"), "field num_layers must be int, found '4'"),
])
def test_an_incomplete_manifest_is_refused_at_start_up_with_the_field(copy, change, message):
    edit(copy, change)
    with pytest.raises(ModelFileError, match=message) as err:
        load_manifest(copy)
    assert str(copy / MANIFEST_FILE) in str(err.value)


def test_an_unknown_encoder_or_one_that_does_not_feed_the_stem_is_refused_at_start_up(copy):
    edit(copy, lambda m: m["encoder"].update(name="vit_frame"))
    with pytest.raises(ModelFileError, match="encoder.name 'vit_frame' is unknown"):
        Runner(make_engine("onnxruntime", copy), ExitSettings(first_checkpoint=1), PriorSettings())
    edit(copy, lambda m: m["encoder"].update(name="driving_frame"))
    edit(copy, lambda m: m["encoder"]["config"].update(route_points=10))   # a model trained on 12 route tokens
    with pytest.raises(ModelFileError, match=r"writes route: \(\(1, 10, 2\), 'float32'\) but the stem takes route: "
                                             r"\(\(1, 12, 2\), 'float32'\)"):
        Runner(make_engine("onnxruntime", copy), ExitSettings(first_checkpoint=1), PriorSettings())


def test_only_onnx_files_are_enough_for_onnxruntime(copy):
    """A user's export may carry no torch programs or weights: it loads; the torch backend says what is missing."""
    def strip(m):
        m["files"].pop("torch"), m["files"].pop("extra")
    edit(copy, strip)
    shutil.rmtree(copy / "torch")
    for name in ("vla.safetensors", "config.json"):
        (copy / name).unlink()
    runner = Runner(make_engine("onnxruntime", copy), ExitSettings(first_checkpoint=1), PriorSettings())
    assert runner.num_layers == 4
    with pytest.raises(ConfigError, match="lists no torch programs"):
        make_engine("torch", copy)


def test_cli_reports_missing_weights_and_exports(tmp_path, export_dir, capsys):
    assert main(["--weights", str(tmp_path / "nowhere" / "vla.safetensors"), "--out", str(tmp_path / "o")]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["--weights", str(export_dir / "vla.safetensors"), "--out", str(tmp_path / "o"), "--no-fused"]) == 0
    m = load_manifest(tmp_path / "o")
    assert m.fused is None and (tmp_path / "o" / "vla.safetensors").is_file()
    assert "[ 6/12] head.onnx" in capsys.readouterr().out
