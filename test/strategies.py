"""Hypothesis strategies and a tiny real layer chain over a synthetic deviation trace."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

HORIZON = 6
DT_S = 0.5


@dataclass
class TraceChain:
    """A layer chain whose head, after layer l, lies exactly `deviations_m[l-1]` metres from the prior.

    It implements run_layers/head for real and records which layers were computed, so tests can
    check that layers after the exit never run.
    """

    deviations_m: np.ndarray
    prior_m: np.ndarray = field(default_factory=lambda: np.zeros((HORIZON, 2), np.float32))
    computed: list[int] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.deviations_m)

    def run_layers(self, state: int, start: int, stop: int) -> int:
        assert state == start, f"chain state at layer {state}, asked to start at {start}"
        assert 0 <= start < stop <= self.num_layers, f"bad layer range [{start}, {stop})"
        self.computed.extend(range(start, stop))
        return stop

    def head(self, state: int) -> np.ndarray:
        offset = np.array([0.0, self.deviations_m[state - 1]], np.float32)   # lateral offset = deviation
        return self.prior_m + offset


def deviation_traces(min_layers: int = 2, max_layers: int = 40) -> st.SearchStrategy[np.ndarray]:
    """Arbitrary per-layer deviations in metres (what the head would show after each layer)."""
    return st.integers(min_layers, max_layers).flatmap(
        lambda n: arrays(np.float32, n, elements=st.floats(0, 60, width=32)))


def converging_traces(min_layers: int = 2, max_layers: int = 40) -> st.SearchStrategy[np.ndarray]:
    """Non-increasing deviations: the trajectory only gets closer to the prior with depth."""
    return deviation_traces(min_layers, max_layers).map(lambda d: np.sort(d)[::-1].copy())


def polylines(min_points: int = 2, max_points: int = 30) -> st.SearchStrategy[np.ndarray]:
    """Routes as (N, 2) points within 200 m of the origin."""
    return st.integers(min_points, max_points).flatmap(
        lambda n: arrays(np.float64, (n, 2), elements=st.floats(-200, 200)))
