"""One camera frame in, one trajectory and its exit record out: the app layer, without ROS types.

The runner owns the engine chain and the model's encoder (named in the manifest), locates the route
once for both the planner prior and the model's route input, encodes the frame once, runs the stem,
and lets the exit controller drive the layers. The ROS node, the offline evaluation and the benchmarks all call
`Runner.plan`, so they measure the same code path.

No implausible trajectory leaves the runner as valid: the controller refuses an early exit whose
trajectory fails validation (deead_ros.exit.validation) and goes deeper; when the last layer's
trajectory fails too, the runner returns a flagged fallback instead: the last valid plan carried
forward by the ego's motion (when the caller gives the ego's pose), else a stopping trajectory.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from deead_ros.engines.protocol import LayerChain
from deead_ros.errors import ConfigError, ModelFileError
from deead_ros.exit import (ExitPolicy, ExitSettings, ExitTrace, FrameContext, Prior, PriorSettings, run_with_exit,
                            select_prior)
from deead_ros.exit.validation import (VALID, Validation, ValidationLimits, carry_forward, stopping_trajectory,
                                       validate)
from deead_ros.geometry import to_ego_frame
from deead_ros.model.encoding import FrameEncoder, FrameInputs, check_encoder_matches, load_encoder, sensors_of
from deead_ros.model.memory import LIVE_STREAM, ComputedPlan, MemoryEncoder, MemoryStreams, keeps_memory
from deead_ros.parameters import default


@dataclass(frozen=True, slots=True)
class EgoPose:
    """The ego's pose at a camera stamp, in the odometry frame: what carrying a plan forward needs."""

    stamp_s: float            # the camera stamp
    x: float                  # m
    y: float                  # m
    yaw: float                # rad

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.stamp_s, self.x, self.y, self.yaw))


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The published trajectory, how it was reached, whether it is the model's, and where the time went."""

    trace: ExitTrace          # the model's trajectory_m (T, 2) ego frame, exit layer, checkpoints
    prior: Prior              # the reference the controller compared against
    stem_ms: float            # encoding the frame + the stem
    total_ms: float
    validation: Validation = VALID          # the verdict on the model's trajectory (trace.trajectory_m)
    fallback: str = ""                      # "" (the model's plan) | carry_forward | stop
    fallback_m: np.ndarray | None = None    # (T, 2) what is published instead, when fallback
    memory_reset: str = ""                  # a model with memory: why it started afresh at this frame

    @property
    def trajectory_m(self) -> np.ndarray:
        """(T, 2) the trajectory to publish: the model's when valid, else the fallback."""
        return self.fallback_m if self.fallback_m is not None else self.trace.trajectory_m

    @property
    def is_valid(self) -> bool:
        """True when the published trajectory is the model's and passed validation."""
        return not self.fallback


@dataclass(frozen=True, slots=True)
class RunnerSettings:
    """Everything a frame's plan reads from the parameters, as one frozen value: the node passes its snapshot's
    with each frame, so a parameter change never mixes old and new values within one frame."""

    exit: ExitSettings
    prior: PriorSettings
    validation: ValidationLimits = ValidationLimits()
    memory_max_gap_s: float = default("memory.max_gap_s")


@dataclass(frozen=True, slots=True)
class _ValidPlan:
    trajectory_m: np.ndarray  # (T, 2) in the ego frame at pose
    pose: EgoPose


class Runner:
    """Plan frames with early exit on one engine chain: with the configured settings (`configure` swaps them in one
    assignment), or with the RunnerSettings a caller passes with each frame (the node's snapshot)."""

    def __init__(self, chain: LayerChain, exit_settings: ExitSettings, prior_settings: PriorSettings,
                 encoder: FrameEncoder | None = None, validation_limits: ValidationLimits | None = None,
                 memory_max_gap_s: float = default("memory.max_gap_s")) -> None:
        """Raises ModelFileError when the manifest's encoder is unknown, does not write the stem's inputs or reads
        other sensors than the manifest declares, ConfigError when a setting is invalid."""
        self.chain = chain
        manifest = chain.manifest
        where = f"engine manifest {manifest.path}"
        self.encoder = encoder or load_encoder(manifest.encoder.name, manifest.encoder.config, where)
        check_encoder_matches(self.encoder, manifest.stem.inputs, where)
        sensors = sensors_of(self.encoder)
        if sensors != manifest.sensors or (sensors.memory and not keeps_memory(self.encoder)):
            raise ModelFileError(f"{where}: sensors {manifest.sensors.to_dict()} but its encoder "
                                 f"'{self.encoder.name}' reads {sensors.to_dict()} (keeps a memory: "
                                 f"{keeps_memory(self.encoder)}); re-run `{manifest.export_command}`")
        # One memory per input stream, for encoders that keep one (deead_ros.model.memory).
        self._memory_encoder = self.encoder if sensors.memory and isinstance(self.encoder, MemoryEncoder) else None
        self.memory = (MemoryStreams(self._memory_encoder.initial_memory, memory_max_gap_s)
                       if self._memory_encoder is not None else None)
        self.dt_s = float(manifest.head_contract.dt_s)
        self.times_s = manifest.head_contract.times_s
        self._active: tuple[ExitSettings, ExitPolicy, PriorSettings, ValidationLimits] = self._checked(
            exit_settings, prior_settings, validation_limits or ValidationLimits())
        self._given: tuple[RunnerSettings | None, tuple[ExitSettings, ExitPolicy, PriorSettings, ValidationLimits]] = (
            None, self._active)                        # the last settings passed to plan, checked, with its policy
        self._last_valid: _ValidPlan | None = None     # written and read by the planning thread only

    @property
    def num_layers(self) -> int:
        return self.chain.num_layers

    @property
    def settings(self) -> tuple[ExitSettings, PriorSettings]:
        exit_settings, _, prior_settings, _ = self._active
        return exit_settings, prior_settings

    @property
    def validation_limits(self) -> ValidationLimits:
        return self._active[3]

    def _checked(self, exit_settings: ExitSettings, prior_settings: PriorSettings, limits: ValidationLimits
                 ) -> tuple[ExitSettings, ExitPolicy, PriorSettings, ValidationLimits]:
        problem = exit_settings.problem(self.num_layers) or prior_settings.problem() or limits.problem()
        if problem:
            raise ConfigError(problem)
        return exit_settings, exit_settings.build_policy(), prior_settings, limits

    def configure(self, exit_settings: ExitSettings, prior_settings: PriorSettings,
                  validation_limits: ValidationLimits | None = None, memory_max_gap_s: float | None = None) -> None:
        """Validate and swap in new settings (one assignment: a frame in flight keeps the old ones).

        validation_limits, memory_max_gap_s: None keeps the current ones.
        """
        self._active = self._checked(exit_settings, prior_settings, validation_limits or self._active[3])
        if self.memory is not None and memory_max_gap_s is not None:
            self.memory.max_gap_s = memory_max_gap_s

    def plan(self, frame: FrameInputs, *, ego_motion_known: bool = True, external_ego_m: np.ndarray | None = None,
             ground_truth_m: np.ndarray | None = None, policy: ExitPolicy | None = None,
             ego_pose: EgoPose | None = None, stream: str = LIVE_STREAM,
             settings: RunnerSettings | None = None) -> PlanResult:
        """Plan one frame; never returns an implausible trajectory as valid.

        Args:
            frame: camera image, route ahead (ego frame, None when missing or stale), ego speed and
                yaw rate, text command.
            ego_motion_known: False when odometry is missing or stale: there is then no prior and
                the frame runs to full depth.
            external_ego_m: an external planner's path in the ego frame (prior.source = external).
            ground_truth_m: (T, 2), evaluation only (oracle policy).
            policy: overrides the configured policy for this frame (evaluation, benchmarks).
            ego_pose: the ego's pose at the camera stamp in the odometry frame. With it, the runner keeps
                the last valid plan and its pose, and a frame whose plan fails validation publishes
                that plan carried forward by the ego's motion (for up to validation.max_carry_forward_s);
                without it (or when that is not possible) the fallback is a stopping trajectory.
            stream: a model with memory keeps one per stream (frames of one stream in stamp order); deead_eval
                plans each exit setting as a stream of its own.
            settings: this frame's settings (the node's snapshot, read once per frame); None: the configured ones.
                A new value is checked (ConfigError) and its policy built once, then reused while it is passed.
        """
        start = time.perf_counter()
        exit_settings, active_policy, prior_settings, limits = self._active if settings is None else self._for(settings)
        max_gap_s = settings.memory_max_gap_s if settings is not None else None
        speed, yaw_rate = (frame.speed_mps, frame.yaw_rate_rps) if ego_motion_known else (None, None)
        route = prior_settings.route_ahead(frame.route_ego_m)        # one route for the prior and the model
        prior = select_prior(prior_settings, self.times_s, speed, yaw_rate, route, external_ego_m)
        stem_start = time.perf_counter()
        located = None if isinstance(route, str) else route
        memory_encoder, memory, memory_reset = self._memory_encoder, None, ""
        if memory_encoder is not None and self.memory is not None:
            memory, memory_reset = self.memory.take(stream, frame.stamp_s, max_gap_s)
            state = self.chain.prepare(memory_encoder.encode(frame, located, memory))
        else:
            state = self.chain.prepare(self.encoder.encode(frame, located))
        stem_ms = (time.perf_counter() - stem_start) * 1e3
        ctx = FrameContext(self.num_layers, prior.trajectory_m, self.dt_s, ground_truth_m)
        dt_s = self.dt_s

        def check(trajectory_m: np.ndarray) -> Validation:
            return validate(trajectory_m, dt_s, speed, limits)

        deadline_s = start + exit_settings.budget_ms / 1e3 if exit_settings.budget_ms > 0 else None
        trace = run_with_exit(self.chain, state, policy or active_policy, ctx, check, deadline_s)
        verdict = trace.validation if trace.validation is not None else check(trace.trajectory_m)
        if memory_encoder is not None and self.memory is not None:   # the exit layer's plan, never a skipped one
            computed = ComputedPlan(trace.trajectory_m, trace.exit_layer, trace.num_layers, frame.stamp_s)
            self.memory.store(stream, memory_encoder.next_memory(memory, frame, computed), frame.stamp_s)
        pose = ego_pose if ego_pose is not None and ego_pose.is_finite() else None
        if verdict.ok:
            if pose is not None:
                self._last_valid = _ValidPlan(trace.trajectory_m, pose)
            return PlanResult(trace, prior, stem_ms, (time.perf_counter() - start) * 1e3, verdict,
                              memory_reset=memory_reset)
        fallback, fallback_m = self._fallback(speed, pose, limits)
        return PlanResult(trace, prior, stem_ms, (time.perf_counter() - start) * 1e3, verdict, fallback, fallback_m,
                          memory_reset)

    def _for(self, settings: RunnerSettings) -> tuple[ExitSettings, ExitPolicy, PriorSettings, ValidationLimits]:
        """The checked settings and policy of a snapshot (built when it differs from the last one passed)."""
        last, checked = self._given
        if settings != last:
            checked = self._checked(settings.exit, settings.prior, settings.validation)
            self._given = (settings, checked)
        return checked

    def reset_memory(self, reason: str) -> None:
        """A model with memory starts every stream afresh at its next frame (odometry reset, deactivation, new
        drive); nothing for a model without one. Safe from any thread."""
        if self.memory is not None:
            self.memory.reset(reason)

    def _fallback(self, speed_mps: float | None, pose: EgoPose | None,
                  limits: ValidationLimits) -> tuple[str, np.ndarray]:
        """The last valid plan carried to this pose when it is recent and still plausible, else a stop."""
        last = self._last_valid
        if last is not None and pose is not None:
            elapsed_s = pose.stamp_s - last.pose.stamp_s
            if 0.0 <= elapsed_s <= limits.max_carry_forward_s:
                (dx, dy), = to_ego_frame(np.array([[pose.x, pose.y]]), last.pose.x, last.pose.y, last.pose.yaw)
                dyaw = math.remainder(pose.yaw - last.pose.yaw, math.tau)
                carried = carry_forward(last.trajectory_m, self.times_s, elapsed_s, float(dx), float(dy), dyaw,
                                        self.times_s)
                if carried is not None and validate(carried, self.dt_s, speed_mps, limits).ok:
                    return "carry_forward", carried
        speed = None if speed_mps is None or not math.isfinite(speed_mps) else min(speed_mps, limits.max_speed_mps)
        return "stop", stopping_trajectory(speed, self.times_s, limits.stop_decel_mps2)
