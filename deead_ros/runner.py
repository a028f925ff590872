"""One camera frame in, one trajectory and its exit record out: the app layer, without ROS types.

The runner owns the engine chain and the model's encoder (named in the manifest), locates the route
once for both the planner prior and the model's route input, encodes the frame once, runs the stem,
and lets the exit controller drive the layers. The ROS node, the offline evaluation and the benchmarks all call
`Runner.plan`, so they measure the same code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from deead_ros.engines.protocol import LayerChain
from deead_ros.errors import ConfigError
from deead_ros.exit import (ExitPolicy, ExitSettings, ExitTrace, FrameContext, Prior, PriorSettings, run_with_exit,
                            select_prior)
from deead_ros.model.encoding import FrameEncoder, FrameInputs, check_encoder_matches, load_encoder


@dataclass(frozen=True, slots=True)
class PlanResult:
    """The published trajectory, how it was reached, and where the time went."""

    trace: ExitTrace          # trajectory_m (T, 2) ego frame, exit layer, checkpoints
    prior: Prior              # the reference the controller compared against
    stem_ms: float            # encoding the frame + the stem
    total_ms: float

    @property
    def trajectory_m(self) -> np.ndarray:
        return self.trace.trajectory_m


class Runner:
    """Plan frames with early exit on one engine chain; settings swap atomically between frames."""

    def __init__(self, chain: LayerChain, exit_settings: ExitSettings, prior_settings: PriorSettings,
                 encoder: FrameEncoder | None = None) -> None:
        """Raises ModelFileError when the manifest's encoder is unknown or does not write the stem's inputs."""
        self.chain = chain
        manifest = chain.manifest
        where = f"engine manifest {manifest.path}"
        self.encoder = encoder or load_encoder(manifest.encoder.name, manifest.encoder.config, where)
        check_encoder_matches(self.encoder, manifest.stem.inputs, where)
        self.dt_s = float(manifest.head_contract.dt_s)
        self.times_s = manifest.head_contract.times_s
        self._active: tuple[ExitSettings, ExitPolicy, PriorSettings] = self._checked(exit_settings, prior_settings)

    @property
    def num_layers(self) -> int:
        return self.chain.num_layers

    @property
    def settings(self) -> tuple[ExitSettings, PriorSettings]:
        exit_settings, _, prior_settings = self._active
        return exit_settings, prior_settings

    def _checked(self, exit_settings: ExitSettings, prior_settings: PriorSettings
                 ) -> tuple[ExitSettings, ExitPolicy, PriorSettings]:
        problem = exit_settings.problem(self.num_layers) or prior_settings.problem()
        if problem:
            raise ConfigError(problem)
        return exit_settings, exit_settings.build_policy(), prior_settings

    def configure(self, exit_settings: ExitSettings, prior_settings: PriorSettings) -> None:
        """Validate and swap in new settings (one assignment: a frame in flight keeps the old ones)."""
        self._active = self._checked(exit_settings, prior_settings)

    def plan(self, frame: FrameInputs, *, ego_motion_known: bool = True, external_ego_m: np.ndarray | None = None,
             ground_truth_m: np.ndarray | None = None, policy: ExitPolicy | None = None) -> PlanResult:
        """Plan one frame.

        Args:
            frame: camera image, route ahead (ego frame, None when missing or stale), ego speed and
                yaw rate, text command.
            ego_motion_known: False when odometry is missing or stale: there is then no prior and
                the frame runs to full depth.
            external_ego_m: an external planner's path in the ego frame (prior.source = external).
            ground_truth_m: (T, 2), evaluation only (oracle policy).
            policy: overrides the configured policy for this frame (evaluation, benchmarks).
        """
        start = time.perf_counter()
        _, active_policy, prior_settings = self._active
        speed, yaw_rate = (frame.speed_mps, frame.yaw_rate_rps) if ego_motion_known else (None, None)
        route = prior_settings.route_ahead(frame.route_ego_m)        # one route for the prior and the model
        prior = select_prior(prior_settings, self.times_s, speed, yaw_rate, route, external_ego_m)
        stem_start = time.perf_counter()
        state = self.chain.prepare(self.encoder.encode(frame, None if isinstance(route, str) else route))
        stem_ms = (time.perf_counter() - stem_start) * 1e3
        ctx = FrameContext(self.num_layers, prior.trajectory_m, self.dt_s, ground_truth_m)
        trace = run_with_exit(self.chain, state, policy or active_policy, ctx)
        return PlanResult(trace, prior, stem_ms, (time.perf_counter() - start) * 1e3)
