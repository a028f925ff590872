"""The demo VLA: token layout, the shared head after every layer, fp16 save/load, and the trainer."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deead_ros.model.encoding import ACCEL_FEATURE, EGO_FEATURES, InputSpec
from deead_ros.errors import ModelFileError
from deead_lab.model.llama_vla import LlamaVLA
from deead_lab.model.vla import DeeadVLA, VLAConfig
from deead_lab.model.weights import CONFIG_FILE, WEIGHTS_FILE, check_compatible, load_pretrained, save_pretrained
from deead_ros.model.encoding import FrameInputs
from deead_lab.train import (hide_acceleration, layer_weights, main as train_main, near_prior_weights,
                                   prior_deviation)

FIXTURE_EPISODE = Path(__file__).parents[1] / "fixtures" / "metadrive_episode.npz"

SMALL = VLAConfig(n_layer=3, d_model=32, n_head=2, stem_channels=(8, 8, 16), mlp_ratio=2)


def inputs(cfg: VLAConfig, batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    return (torch.randn(batch, 3, *cfg.image_hw, generator=g), torch.randn(batch, cfg.route_points, 2, generator=g),
            torch.randn(batch, EGO_FEATURES, generator=g),
            torch.randint(0, cfg.vocab_size, (batch, cfg.max_command_tokens), generator=g, dtype=torch.int32))


def test_default_config_matches_the_default_input_encoding():
    cfg = VLAConfig()
    assert check_compatible(cfg, InputSpec()) is None
    assert cfg.image_grid == (3, 5) and cfg.n_tokens == 15 + 12 + 1 + 8 + 1
    assert cfg.n_layer == 24


def test_stem_layers_head_compose_to_forward_and_every_layer_feeds_the_head():
    torch.manual_seed(0)
    model = DeeadVLA(SMALL).eval()
    x = inputs(SMALL)
    with torch.no_grad():
        h = model.stem(*x)
        assert h.shape == (2, SMALL.n_tokens, SMALL.d_model)
        per_layer = []
        for block in model.blocks:
            h = block(h)
            per_layer.append(model.trajectory_at(h))
        all_layers = model.forward_all_layers(*x)
        full = model(*x)
    assert all_layers.shape == (2, SMALL.n_layer, SMALL.horizon, 2)
    torch.testing.assert_close(all_layers, torch.stack(per_layer, dim=1))
    torch.testing.assert_close(all_layers[:, -1], full)


def test_planning_token_sees_the_command():
    torch.manual_seed(0)
    model = DeeadVLA(SMALL).eval()
    image, route, ego, ids = inputs(SMALL, batch=1)
    with torch.no_grad():
        a = model(image, route, ego, ids)
        b = model(image, route, ego, (ids + 1) % SMALL.vocab_size)
    assert not torch.allclose(a, b), "changing the command did not change the plan"


def test_save_load_round_trip_in_fp16(tmp_path):
    torch.manual_seed(0)
    model = DeeadVLA(SMALL).eval()
    save_pretrained(model, InputSpec(), tmp_path, model_version="test-1")
    loaded = load_pretrained(tmp_path / WEIGHTS_FILE)
    assert loaded.model_version == "test-1" and loaded.inputs == InputSpec() and loaded.model.cfg == SMALL
    for key, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[key], tensor.half().float())
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert config["model"]["n_layer"] == 3 and config["inputs"]["vocabulary"][:2] == ["<pad>", "<unk>"]


def test_load_names_the_file_and_the_fix(tmp_path):
    save_pretrained(DeeadVLA(SMALL), InputSpec(), tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["model"]["d_model"] = 64
    config["model"]["n_head"] = 4
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"vla.safetensors: \S+ has shape \(32,\), config.json implies \(64,\)"):
        load_pretrained(tmp_path)
    (tmp_path / CONFIG_FILE).unlink()
    with pytest.raises(ModelFileError, match="config.json is missing"):
        load_pretrained(tmp_path)


def test_load_rejects_a_damaged_weights_file(tmp_path):
    save_pretrained(DeeadVLA(SMALL), InputSpec(), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_pretrained(tmp_path)


def test_acceleration_dropout_hides_only_the_acceleration_of_about_the_share_asked():
    ego = torch.ones(4000, EGO_FEATURES)
    hide_acceleration(ego, np.random.default_rng(0), 0.0)
    assert torch.all(ego == 1.0)
    hide_acceleration(ego, np.random.default_rng(0), 0.5)
    hidden = ego[:, ACCEL_FEATURE] == 0.0
    assert 0.45 < hidden.float().mean() < 0.55
    others = [i for i in range(EGO_FEATURES) if i != ACCEL_FEATURE]
    assert torch.all(ego[:, others] == 1.0)


def test_trainer_refuses_dropout_of_an_input_the_model_does_not_have(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--accel-dropout", "0.5"])
    assert exit_info.value.code == 2 and "--acceleration-input" in capsys.readouterr().err


def test_trainer_refuses_to_resume_a_checkpoint_trained_with_other_options(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"step": 5}, run / "checkpoint.pt")        # before the regime was stored: acceleration input on
    assert train_main(["--run", str(run), "--data", str(tmp_path / "no_data")]) == 2
    assert "acceleration input True, now False" in capsys.readouterr().err
    regime = {"inputs": InputSpec(acceleration_input=False).to_dict(), "final_only": True, "accel_dropout": 0.0}
    torch.save({"step": 5, "regime": regime}, run / "checkpoint.pt")
    assert train_main(["--final-only", "--run", str(run), "--data", str(tmp_path / "no_data")]) == 2
    assert "arch not recorded (an older checkpoint), now deead_vla" in capsys.readouterr().err
    regime.update(arch="deead_vla", model=VLAConfig().to_dict(), shallow_weight=0.2, final_weight=2.0,
                  max_val_frames=0)
    torch.save({"step": 5, "regime": regime}, run / "checkpoint.pt")
    assert train_main(["--run", str(run), "--data", str(tmp_path / "no_data")]) == 2
    assert "final_only True, now False" in capsys.readouterr().err
    assert train_main(["--final-only", "--run", str(run), "--data", str(tmp_path / "no_data")]) == 2
    assert "no episodes" in capsys.readouterr().err, "the same options get past the check"


TINY_LLAMA = ["num_hidden_layers=3", "hidden_size=32", "intermediate_size=64", "vit_width=32", "vit_layers=1",
              "num_attention_heads=2", "num_key_value_heads=2", "head_hidden=32"]


def test_trainer_trains_the_llama_vla_with_the_early_exit_loss(tmp_path):
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "weights"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
        shutil.copy(FIXTURE_EPISODE, data / split / "ep_00001.npz")
    args = ["--arch", "llama_vla", "--model-config", *TINY_LLAMA, "--data", str(data), "--run", str(run),
            "--out", str(out), "--steps", "4", "--batch", "4", "--eval-every", "2", "--checkpoint-every", "2",
            "--threads", "1"]
    assert train_main(args) == 0
    loaded = load_pretrained(out)
    assert loaded.arch == "llama_vla" and isinstance(loaded.model, LlamaVLA)
    assert loaded.model.cfg.num_hidden_layers == 3
    assert "llama-vla-1" in loaded.model_version
    per_layer = json.loads((run / "val_per_layer_ade.json").read_text())
    assert len(per_layer) == 3 and all(np.isfinite(per_layer))
    args[args.index("--steps") + 1] = "6"
    assert train_main(args) == 0                              # resumes from step 4
    assert (run / "log.csv").read_text().count("\n") == 1 + 6
    assert train_main([*args, "--shallow-weight", "0.05"]) == 2, "another loss is another training"


def test_trainer_fine_tunes_trained_weights_and_refuses_another_model(tmp_path, capsys):
    data, base = tmp_path / "data", tmp_path / "base"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
        shutil.copy(FIXTURE_EPISODE, data / split / "ep_00001.npz")
    common = ["--arch", "llama_vla", "--model-config", *TINY_LLAMA, "--data", str(data), "--steps", "2",
              "--batch", "4", "--eval-every", "2", "--threads", "1"]
    assert train_main([*common, "--final-only", "--run", str(tmp_path / "run0"), "--out", str(base)]) == 0
    tuned = tmp_path / "tuned"
    frozen = [*common, "--lr", "0", "--init-from", str(base), "--run", str(tmp_path / "run1"), "--out", str(tuned)]
    assert train_main(frozen) == 0
    before, after = load_pretrained(base), load_pretrained(tuned)
    assert "fine-tuned from " + before.model_version in after.model_version
    for key, value in before.model.state_dict().items():      # learning rate 0: the start is the base model
        assert torch.equal(value, after.model.state_dict()[key]), key
    regime = torch.load(tmp_path / "run1" / "checkpoint.pt", weights_only=False)["regime"]
    assert regime["init_from"] == before.model_version
    wider = [*common[:3], *TINY_LLAMA[:1], "hidden_size=64", *TINY_LLAMA[2:], *common[3 + len(TINY_LLAMA):]]
    with pytest.raises(SystemExit) as exit_info:
        train_main([*wider, "--init-from", str(base), "--run", str(tmp_path / "run2")])
    assert exit_info.value.code == 2 and "give the same --arch, --model-config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_main([*common, "--init-from", str(tmp_path / "nowhere"), "--run", str(tmp_path / "run3")])
    assert "--init-from" in capsys.readouterr().err


@pytest.mark.parametrize("args, says", [
    (["--arch", "llama_vla", "--model-config", "hidden_sise=64"], "hidden_sise"),
    (["--arch", "llama_vla", "--model-config", "image_hw=[48, 80]"], "does not fit the input encoding"),
    (["--arch", "llama_vla", "--layers", "8"], "--layers sets deead_vla's n_layer"),
    (["--arch", "llama_vla", "--model-config", "num_hidden_layers=3", "--supervise-from", "4",
      "--data", "/nonexistent"], "supervise_from 4 is outside layers 1..3"),
    (["--ramp-power", "0", "--data", "/nonexistent"], "ramp_power 0.0 must be positive"),
], ids=["unknown key", "input size", "--layers for llama", "--supervise-from past the last layer",
         "--ramp-power 0"])
def test_trainer_names_a_bad_model_config(capsys, args, says):
    with pytest.raises(SystemExit) as exit_info:
        train_main(args)
    assert exit_info.value.code == 2 and says in capsys.readouterr().err


def test_layer_weights_rise_from_the_shallow_weight_to_the_final_one():
    w = layer_weights(5, final_only=False, shallow=0.05, final=3.0)
    assert float(w.sum()) == pytest.approx(1.0)
    assert w[0] / w[3] == pytest.approx(0.05) and w[4] / w[3] == pytest.approx(3.0)
    assert torch.all(w[1:4] > w[:3])


def test_layer_weights_leave_the_layers_before_the_first_supervised_one_free():
    w = layer_weights(8, final_only=False, shallow=0.1, final=2.0, supervise_from=4)
    assert torch.all(w[:3] == 0) and float(w.sum()) == pytest.approx(1.0)
    assert w[3] / w[6] == pytest.approx(0.1) and w[7] / w[6] == pytest.approx(2.0)
    assert torch.equal(layer_weights(8, final_only=False, supervise_from=8), torch.eye(8)[-1])
    with pytest.raises(ValueError, match="outside layers 1..8"):
        layer_weights(8, final_only=False, supervise_from=9)


def test_a_steeper_ramp_keeps_the_layers_after_the_first_supervised_one_light():
    linear = layer_weights(32, final_only=False, shallow=0.0, supervise_from=13)
    cubic = layer_weights(32, final_only=False, shallow=0.0, supervise_from=13, ramp_power=3.0)
    assert float(cubic.sum()) == pytest.approx(1.0) and torch.all(cubic[:13] == 0)
    assert cubic[30] / cubic[31] == pytest.approx(0.5) == linear[30] / linear[31]   # the same ends
    assert cubic[13] / cubic[30] == pytest.approx((1 / 18) ** 3)                   # layer 14: 1/18 of the way
    assert torch.all(torch.diff(cubic[12:31]) > 0)


def test_prior_deviation_measures_the_expert_against_the_route_prior_the_controller_builds():
    dt, speed = 0.5, 8.0
    times = dt * np.arange(1, 7)
    route = np.stack([np.arange(0.0, 120.0, 2.0), np.zeros(60)], axis=1)         # straight ahead
    image = np.zeros((96, 160, 3), np.uint8)
    frames = [FrameInputs(image, route, speed, 0.0), FrameInputs(image, route, speed, 0.0),
              FrameInputs(image, None, speed, 0.0)]
    along = np.stack([speed * times, np.zeros(6)], axis=1)
    future = np.stack([along, along + [0.0, 1.5], along]).astype(np.float32)   # on the route, 1.5 m beside it
    deviation = prior_deviation(frames, future, dt, horizon_s=2.0)
    assert deviation[0] == pytest.approx(0.0, abs=1e-3) and deviation[1] == pytest.approx(1.5, abs=1e-3)
    assert np.isinf(deviation[2]), "no route, no prior"
    weights = near_prior_weights(deviation, scale_m=1.5)
    assert weights[0] == pytest.approx(1.0, abs=1e-3) and weights[1] == pytest.approx(np.exp(-1.0), abs=1e-3)
    assert weights[2] == 0.0


def test_trainer_weighs_the_intermediate_layers_by_the_prior_match(tmp_path, capsys):
    data = tmp_path / "data"
    for split in ("train", "val"):
        (data / split).mkdir(parents=True)
        shutil.copy(FIXTURE_EPISODE, data / split / "ep_00001.npz")
    args = ["--arch", "llama_vla", "--model-config", *TINY_LLAMA, "--data", str(data), "--steps", "2",
            "--batch", "4", "--eval-every", "2", "--threads", "1", "--run", str(tmp_path / "run"),
            "--out", str(tmp_path / "weights")]
    assert train_main([*args, "--near-prior-m", "0.5"]) == 0
    regime = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["regime"]
    assert regime["near_prior_m"] == 0.5
    assert train_main(args) == 2, "another loss is another training"
    with pytest.raises(SystemExit):
        train_main([*args, "--near-prior-m", "-1"])
    assert "--near-prior-m -1.0 must be >= 0" in capsys.readouterr().err
