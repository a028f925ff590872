"""deead_train: train a VLA of a registered architecture on the simulator data set, on the CPU, resumable.

`--arch` picks the architecture (deead_vla: the first demo model; llama_vla: the ORION-shaped ViT +
Llama decoder), `--model-config KEY=VALUE` changes its config (width, depth, ...).
Loss: the mean displacement (L2, metres) of the trajectory read through the shared head after
every layer, weighted by depth (LayerSkip/DEED-style early-exit loss; the final layer weighs
most: `--shallow-weight` for the first layer rising linearly to 1 before the last, `--final-weight`
for the last). With --final-only, only the last layer is trained: the variant that shows why the
early-exit loss is needed (intermediate layers then do not produce usable trajectories).
Checkpoints every --checkpoint-every steps; a run that is cut off resumes where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deead_lab.model.architectures import ARCHITECTURES, DEFAULT_ARCH, VLAModel
from deead_ros.model.encoding import (ACCEL_FEATURE, FrameInputs, InputSpec, accelerations, encode_batch,
                                     normalise_images, resize_uint8)
from deead_ros.errors import ModelFileError
from deead_ros.exit import PriorSettings, select_prior
from deead_ros.exit.metrics import mean_deviation_m, steps_within
from deead_ros.exit.prior import Prior
from deead_lab.model.weights import check_compatible, load_pretrained, save_pretrained
from deead_ros.parameters import default
from deead_lab.dataset_format import load_episode
from deead_ros.files import replacing
from deead_ros.geometry import world_to_ego

MODEL_VERSIONS = {"deead_vla": "deead-vla-1 metadrive", "llama_vla": "llama-vla-1 metadrive"}


def episode_frames(ep: dict[str, np.ndarray], accel_window_s: float) -> tuple[np.ndarray, list[FrameInputs]]:
    """The frames of an episode a model learns from or is scored on: a full 3 s future, no crash or off-road in it.

    Returns the mask over the episode's frames and their inputs; the acceleration is measured over
    every recorded frame, as the node measures it from the odometry stream.
    """
    keep = ep["has_full_future"] & ep["future_clean"]
    accel = accelerations(ep["timestamp"], ep["speed"], accel_window_s)
    frames = []
    for t in np.nonzero(keep)[0]:
        valid = max(int(ep["route_valid"][t]), 0)
        route = world_to_ego(ep["route_world"][t, :valid], ep["pose"][t]) if valid >= 2 else None
        frames.append(FrameInputs(ep["images"][t], route, float(ep["speed"][t]), float(ep["yaw_rate"][t]),
                                  str(ep["command"][t]), float(accel[t])))
    return keep, frames


def trajectory_or_nan(prior: Prior, steps: int) -> np.ndarray:
    """The prior's (T, 2) trajectory, or (steps, 2) NaN where it has none."""
    if prior.trajectory_m is None:
        return np.full((steps, 2), np.nan, np.float32)
    return prior.trajectory_m


def route_priors(frames: list[FrameInputs], times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each recorded frame's route prior as the exit controller builds it from the route alone (no fallback).

    Returns which frames have one (N,) and the priors (N, T, 2), NaN where there is none.
    """
    route_only = PriorSettings(fallback_to_constant_velocity=False)
    priors = [select_prior(route_only, times_s, f.speed_mps, f.yaw_rate_rps, route_only.route_ahead(f.route_ego_m))
              for f in frames]
    has_route = np.array([p.is_valid for p in priors], bool)
    return has_route, np.stack([trajectory_or_nan(p, len(times_s)) for p in priors])


def prior_deviation(frames: list[FrameInputs], future: np.ndarray, dt_s: float, horizon_s: float) -> np.ndarray:
    """(N,) how far the expert's future lies from the route prior over the controller's horizon (inf: no route)."""
    times = dt_s * np.arange(1, future.shape[1] + 1)
    has_route, prior = route_priors(frames, times)
    steps = steps_within(horizon_s, dt_s, future.shape[1])
    return np.array([mean_deviation_m(f, p, steps) if ok else np.inf for f, p, ok in zip(future, prior, has_route)],
                    np.float32)


def encode_split(files: list[Path], spec: InputSpec, dt_s: float | None = None) -> dict[str, np.ndarray]:
    """Load episodes and encode everything but the image normalisation (done per batch, in torch).

    With `dt_s` (the model's waypoint spacing) each frame also gets `prior_deviation` (prior_deviation()).
    """
    parts: dict[str, list] = {k: [] for k in ("images", "route", "ego", "command_ids", "future", "episode")}
    if dt_s is not None:
        parts["prior_deviation"] = []
    for i, path in enumerate(files):
        ep = load_episode(path)
        keep, frames = episode_frames(ep, spec.accel_window_s)
        if not frames:
            continue
        encoded = encode_batch(frames, spec)        # the normalised image is redone per batch from uint8
        images = ep["images"][keep]
        if images.shape[1:3] != tuple(spec.image_hw):   # recorded at another size: stored as the encoder resizes
            images = np.stack([resize_uint8(image, spec.image_hw) for image in images])
        parts["images"].append(images)
        for key in ("route", "ego", "command_ids"):
            parts[key].append(encoded[key])
        parts["future"].append(ep["future_ego"][keep].astype(np.float32))
        if dt_s is not None:
            parts["prior_deviation"].append(prior_deviation(frames, parts["future"][-1], dt_s,
                                                            float(default("exit.horizon_s"))))
        parts["episode"].append(np.full(len(frames), i, np.int32))
    return {k: np.concatenate(v) for k, v in parts.items()} if parts["future"] else {}


def layer_weights(num_layers: int, final_only: bool, shallow: float = 0.2, final: float = 2.0,
                  supervise_from: int = 1, ramp_power: float = 1.0) -> torch.Tensor:
    """Per-layer loss weights: none before layer `supervise_from` (1-based), `shallow` there rising to 1
    before the last layer (linearly, or as x**ramp_power of the way along), `final` at the last; sum 1.

    A small `shallow` weight lets the first layers prepare features instead of plans (a model whose
    early layers must already plan well does not need its depth); the exit controller still finds
    usable plans in the middle layers, which the linear ramp keeps trained. Layers before the exit
    controller's first checkpoint are never read, so `supervise_from` = that checkpoint leaves them
    free to build features, as a model trained for its last layer only (ORION) does. A ramp_power above
    1 keeps the layers just after that checkpoint lightly supervised, so that the plan still improves
    with depth (ORION's 0-1.6 m per layer after layer 13) instead of being finished there.
    """
    if not 1 <= supervise_from <= num_layers:
        raise ValueError(f"supervise_from {supervise_from} is outside layers 1..{num_layers}")
    if ramp_power <= 0:
        raise ValueError(f"ramp_power {ramp_power} must be positive (1: linear)")
    w = torch.zeros(num_layers)
    if final_only:
        w[-1] = 1.0
        return w
    w[-1] = final
    ramp = num_layers - supervise_from            # supervised layers before the last
    if ramp > 0:
        along = torch.linspace(0.0, 1.0, ramp) ** ramp_power if ramp > 1 else torch.ones(1)
        w[supervise_from - 1:-1] = shallow + (1.0 - shallow) * along
    return w / w.sum()


def model_config(arch: str, overrides: list[str]) -> Any:
    """The architecture's default config with KEY=VALUE overrides (values parsed as JSON: 128, 5.0, [96, 160])."""
    values: dict[str, Any] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--model-config {item!r}: expected KEY=VALUE, e.g. hidden_size=128")
        try:
            values[key] = json.loads(text)
        except json.JSONDecodeError:
            values[key] = text
    return ARCHITECTURES[arch].config.from_dict(values)


def per_layer_ade(pred: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
    """(B, L, T, 2) predictions vs (B, T, 2) ground truth -> (L,) mean displacement, m."""
    return per_frame_layer_ade(pred, future).mean(dim=0)


def per_frame_layer_ade(pred: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
    """(B, L, T, 2) predictions vs (B, T, 2) ground truth -> (B, L) mean displacement, m."""
    return (pred - future[:, None]).norm(dim=-1).mean(dim=2)


def near_prior_weights(deviation_m: np.ndarray, scale_m: float) -> np.ndarray:
    """exp(-(d / scale)^2): 1 where the expert follows the route prior, ~0 where it leaves it or there is none."""
    return np.exp(-np.square(deviation_m / scale_m)).astype(np.float32)


def batch_tensors(data: dict[str, np.ndarray], idx: np.ndarray, spec: InputSpec) -> tuple[torch.Tensor, ...]:
    image = torch.from_numpy(normalise_images(data["images"][idx], spec))
    return (image, torch.from_numpy(data["route"][idx]), torch.from_numpy(data["ego"][idx]),
            torch.from_numpy(data["command_ids"][idx]), torch.from_numpy(data["future"][idx]))


@torch.no_grad()
def evaluate(model: VLAModel, data: dict[str, np.ndarray], spec: InputSpec, batch: int = 256) -> np.ndarray:
    """Per-layer mean displacement (L,) on a data set."""
    model.eval()
    total: torch.Tensor | None = None
    count = 0
    for start in range(0, len(data["future"]), batch):
        idx = np.arange(start, min(start + batch, len(data["future"])))
        *inputs, future = batch_tensors(data, idx, spec)
        ade = per_layer_ade(model.forward_all_layers(*inputs), future) * len(idx)
        total = ade if total is None else total + ade
        count += len(idx)
    model.train()
    if total is None:
        raise ValueError("evaluate needs at least one frame")
    return (total / count).numpy()


def hide_acceleration(ego: torch.Tensor, rng: np.random.Generator, share: float) -> None:
    """Set the acceleration input of about `share` of the batch to 0 (cruising), in place.

    Why: with its own recent speed change as an input, a driving model can learn to continue it (the
    copycat or inertia problem of behaviour cloning); in the closed loop that feeds its own braking
    back into its plan. Hiding the input on part of the frames makes the model read speed from the
    scene as well (ChauffeurNet's past-motion dropout).
    """
    if share > 0.0:
        ego[torch.from_numpy(rng.random(len(ego)) < share), ACCEL_FEATURE] = 0.0


# Options added after checkpoints were written without them, at the value those were trained with.
UNRECORDED_REGIME = {"supervise_from": 1, "ramp_power": 1.0, "init_from": None, "near_prior_m": 0.0}


def regime_changes(state: dict, regime: dict) -> str:
    """What a checkpoint was trained with that differs from this run's options ('' if nothing).

    Resuming with other inputs or another loss would mix two trainings under one model version.
    Checkpoints from before the regime was stored were trained with the default inputs.
    """
    trained = {**UNRECORDED_REGIME, **state.get("regime", {"inputs": InputSpec().to_dict()})}
    changes = [f"{key} {trained.get(key, 'not recorded (an older checkpoint)')}, now {regime[key]}" for key in regime
               if key != "inputs" and trained.get(key) != regime[key]]
    was, now = InputSpec.from_dict(trained["inputs"]), InputSpec.from_dict(regime["inputs"])
    if was.acceleration_input != now.acceleration_input:
        changes.append(f"acceleration input {was.acceleration_input}, now {now.acceleration_input}")
    elif was != now:
        changes.append("another input encoding")
    return "; ".join(changes)


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deead_train", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/metadrive"), help="collector output (train/, val/)")
    parser.add_argument("--run", type=Path, default=Path("runs/train"), help="checkpoints and logs (resumable)")
    parser.add_argument("--out", type=Path, default=Path("deead_ros/models/demo"), help="where the trained weights go")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--final-only", action="store_true", help="train the last layer only (ablation)")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=DEFAULT_ARCH,
                        help="model architecture (default: %(default)s)")
    parser.add_argument("--model-config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override fields of the architecture's config, e.g. num_hidden_layers=32 hidden_size=128")
    parser.add_argument("--layers", type=int, default=None, help="depth of deead_vla (n_layer; default 24)")
    parser.add_argument("--shallow-weight", type=float, default=0.2,
                        help="early-exit loss weight of the first layer, rising linearly to 1 before the last")
    parser.add_argument("--final-weight", type=float, default=2.0, help="early-exit loss weight of the last layer")
    parser.add_argument("--supervise-from", type=int, default=1, metavar="LAYER",
                        help="first layer (1-based) the early-exit loss reads; set it to the exit controller's "
                             "first checkpoint so that earlier layers are free to build features")
    parser.add_argument("--ramp-power", type=float, default=1.0,
                        help="shape of the weight ramp from --supervise-from to the last layer (1: linear; 3: the "
                             "layers just after the first supervised one weigh little, so depth still pays)")
    parser.add_argument("--near-prior-m", type=float, default=0.0, metavar="SCALE",
                        help="train the layers before the last mostly on the frames whose expert future follows the "
                             "route prior (weight exp(-(d/SCALE)^2), d its deviation over exit.horizon_s): the frames "
                             "the exit controller lets out early; 0: every frame alike")
    parser.add_argument("--init-from", type=Path, default=None, metavar="WEIGHTS",
                        help="start from these trained weights (a deead_train output of the same architecture and "
                             "config) instead of random ones: fine-tunes e.g. a final-layer-only model for early exit")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--max-train-episodes", type=int, default=0, help="0: all")
    parser.add_argument("--max-val-frames", type=int, default=0,
                        help="validate on this many frames spread evenly over the val maps (0: all); a 32-layer "
                             "model takes minutes per pass over every val frame on a CPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--acceleration-input", action="store_true",
                        help="let the model see the ego's recent speed change (off by default: with it, the model "
                             "learns to continue its own braking and drives worse in the closed loop)")
    parser.add_argument("--accel-dropout", type=float, default=0.0,
                        help="with --acceleration-input: share of training frames whose acceleration is hidden "
                             "(0: cruising), ChauffeurNet's past-motion dropout against copying the ego's own "
                             "speed change")
    args = parser.parse_args(argv)
    if args.near_prior_m < 0:
        parser.error(f"--near-prior-m {args.near_prior_m} must be >= 0 m (0: every frame alike)")
    if args.accel_dropout and not args.acceleration_input:
        parser.error("--accel-dropout hides the acceleration input, which is off; add --acceleration-input")

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    spec = InputSpec(acceleration_input=args.acceleration_input)
    depth_twice = any(o.startswith("n_layer=") for o in args.model_config)
    if args.layers is not None and (args.arch != "deead_vla" or depth_twice):
        parser.error("--layers sets deead_vla's n_layer; give the depth once, with --model-config for other models")
    overrides = args.model_config + ([f"n_layer={args.layers}"] if args.layers is not None else [])
    try:
        cfg = model_config(args.arch, overrides)
    except ValueError as err:
        parser.error(str(err))
    mismatch = check_compatible(cfg, spec)
    if mismatch:
        parser.error(f"the model config does not fit the input encoding ({mismatch}); keep those fields at their "
                     "defaults")
    start_from = None
    if args.init_from is not None:
        try:
            start_from = load_pretrained(args.init_from)
        except (ModelFileError, OSError) as err:
            parser.error(f"--init-from: {err}")
        theirs = (start_from.arch, start_from.model.cfg, start_from.inputs)
        if theirs != (args.arch, cfg, spec):
            parser.error(f"--init-from {args.init_from} holds a {start_from.arch} with config "
                         f"{start_from.model.cfg.to_dict()} and inputs {start_from.inputs.to_dict()}; give the same "
                         "--arch, --model-config and input options to fine-tune it")
    regime = {"inputs": spec.to_dict(), "final_only": args.final_only, "accel_dropout": args.accel_dropout,
              "arch": args.arch, "model": cfg.to_dict(), "shallow_weight": args.shallow_weight,
              "final_weight": args.final_weight, "max_val_frames": args.max_val_frames,
              "supervise_from": args.supervise_from, "ramp_power": args.ramp_power,
              "init_from": start_from.model_version if start_from else None, "near_prior_m": args.near_prior_m}
    checkpoint = args.run / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=False) if checkpoint.exists() else None
    if state is not None:
        changed = regime_changes(state, regime)
        if changed:
            print(f"deead_train: {checkpoint} was trained with other options ({changed}); resume with the same "
                  "options or start a new run with --run", file=sys.stderr)
            return 2
    model = ARCHITECTURES[args.arch].model(cfg)
    if start_from is not None:
        model.load_state_dict(start_from.model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    n_layers = ARCHITECTURES[args.arch].adapter(model).num_layers
    try:
        weights = layer_weights(n_layers, args.final_only, args.shallow_weight, args.final_weight, args.supervise_from,
                                args.ramp_power)
    except ValueError as err:
        parser.error(f"--supervise-from / --ramp-power: {err}")
    train_files = sorted((args.data / "train").glob("ep_*.npz"))
    if args.max_train_episodes:
        train_files = train_files[: args.max_train_episodes]
    val_files = sorted((args.data / "val").glob("ep_*.npz"))
    if not train_files or not val_files:
        print(f"deead_train: no episodes under {args.data}/train or {args.data}/val; collect them first "
              "(make metadrive, then python -m deead_lab.collect_metadrive)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    train = encode_split(train_files, spec, cfg.dt_s if args.near_prior_m > 0 else None)
    if args.near_prior_m > 0:            # the weight of each frame for the layers before the last, once
        train["near_prior_weight"] = near_prior_weights(train["prior_deviation"], args.near_prior_m)
    val = encode_split(val_files, spec)
    if args.max_val_frames and len(val["future"]) > args.max_val_frames:    # evenly spread: every map keeps some
        pick = np.linspace(0, len(val["future"]) - 1, args.max_val_frames).astype(int)
        val = {key: value[pick] for key, value in val.items()}
    print(f"[train] {len(train['future'])} train frames ({len(train_files)} episodes), {len(val['future'])} val "
          f"frames; encoded in {time.perf_counter() - t0:.0f} s", flush=True)

    args.run.mkdir(parents=True, exist_ok=True)
    step, best_val = 0, float("inf")
    variant = ("final-layer loss only" if args.final_only else "early-exit loss") + \
        (f" weighted near the route prior {args.near_prior_m:g} m" if args.near_prior_m else "") + \
        (", acceleration input" if args.acceleration_input else "") + \
        (f", acceleration dropout {args.accel_dropout:g}" if args.accel_dropout else "") + \
        (f", fine-tuned from {start_from.model_version}" if start_from else "")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, rng, best_val = state["step"], state["rng"], state.get("best_val", float("inf"))
        torch.set_rng_state(state["torch_rng"])
        print(f"[train] resumed from {checkpoint} at step {step}", flush=True)
    log_path = args.run / "log.csv"
    log_new = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if log_new:
        writer.writerow(["step", "loss", "final_ade_m", "lr", "elapsed_s", "val_final_ade_m"])
    model.train()
    start, start_step = time.perf_counter(), step
    while step < args.steps:
        lr = learning_rate(step, args.steps, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(train["future"]), args.batch)
        image, route, ego, command_ids, future = batch_tensors(train, idx, spec)
        hide_acceleration(ego, rng, args.accel_dropout)
        per_frame = per_frame_layer_ade(model.forward_all_layers(image, route, ego, command_ids), future)
        if args.near_prior_m > 0:        # the last layer on every frame, the others where the prior matches
            near = torch.from_numpy(train["near_prior_weight"][idx])
            per_frame = torch.cat([per_frame[:, :-1] * near[:, None], per_frame[:, -1:]], dim=1)
        ade = per_frame.mean(dim=0)
        loss = (weights * ade).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        val_ade = ""
        if step % args.eval_every == 0 or step == args.steps:
            val_final = float(evaluate(model, val, spec)[-1])
            val_ade = f"{val_final:.4f}"
            if val_final < best_val:          # keep the weights that validate best (the data set is small)
                best_val = val_final
                save_pretrained(model, spec, args.out, f"{MODEL_VERSIONS[args.arch]} ({variant}, step {step})")
        writer.writerow([step, f"{loss.item():.4f}", f"{ade[-1].item():.4f}", f"{lr:.2e}",
                         f"{time.perf_counter() - start:.0f}", val_ade])
        if step % 20 == 0 or val_ade:
            rate = (step - start_step) / (time.perf_counter() - start)
            print(f"[train] step {step}/{args.steps} loss {loss.item():.3f} final ADE {ade[-1].item():.3f} m "
                  f"lr {lr:.1e} {rate:.2f} steps/s ETA {(args.steps - step) / rate / 60:.1f} min"
                  + (f" | val final ADE {val_ade} m" if val_ade else ""), flush=True)
            log.flush()
        if step % args.checkpoint_every == 0 or step == args.steps:
            with replacing(checkpoint) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                            "rng": rng, "torch_rng": torch.get_rng_state(), "best_val": best_val, "regime": regime},
                           tmp)
    log.close()
    best = load_pretrained(args.out)
    assert best.arch == args.arch, f"{args.out} holds a {best.arch}, not the model trained here"
    per_layer = evaluate(best.model, val, spec)
    (args.run / "val_per_layer_ade.json").write_text(json.dumps([float(x) for x in per_layer]))
    print(f"[train] kept {best.model_version}: val ADE per layer {[round(float(x), 2) for x in per_layer]}")
    print(f"[train] weights {best.weights_path} ({best.weights_path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
