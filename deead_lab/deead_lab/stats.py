"""The lab's statistics, in one place: binomial tail bounds and p-values for calibration's risk control, paired
tests and intervals for the closed loop, bootstrap intervals for the reports (numpy only; the closed loop runs
it in the MetaDrive venv)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypedDict

import numpy as np


BOOTSTRAP_SAMPLES = 10_000


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k), summed exactly term by term in log space (no scipy)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    base = math.lgamma(n + 1)
    terms = [base - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * math.fsum(math.exp(t - top) for t in terms))


def binomial_p_value(losses: int, n: int, alpha: float) -> float:
    """LTT's p-value for H: risk > alpha from `losses` 0/1 losses in n i.i.d. samples: P(Bin(n, alpha) <= losses)."""
    return binomial_cdf(losses, n, alpha)


def _bisect_decreasing(f: Callable[[float], float], target: float, lo: float = 0.0, hi: float = 1.0,
                       iterations: int = 60) -> float:
    """The smallest x in [lo, hi] with f(x) <= target, for f non-increasing in x (to 2^-60)."""
    if f(lo) <= target:
        return lo
    if f(hi) > target:
        return hi
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if f(mid) <= target:
            hi = mid
        else:
            lo = mid
    return hi


def clopper_pearson_upper(losses: int, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on the risk at `confidence`: risk <= it with prob >= confidence.

    The smallest r with P(Bin(n, r) <= losses) <= 1 - confidence; 1.0 when losses == n.
    """
    if losses >= n:
        return 1.0
    return _bisect_decreasing(lambda r: binomial_cdf(losses, n, r), 1.0 - confidence)


def _kl_bernoulli(a: float, b: float) -> float:
    """KL(Bernoulli(a) || Bernoulli(b)) = h1(a, b) of Hoeffding's bound."""
    def term(x: float, y: float) -> float:
        if x <= 0.0:
            return 0.0
        return math.inf if y <= 0.0 else x * math.log(x / y)     # y = 0: no risk level explains a loss share x
    return term(a, b) + term(1.0 - a, 1.0 - b)


def hoeffding_bentkus_p_value(mean_loss: float, n: int, alpha: float) -> float:
    """LTT's Hoeffding-Bentkus p-value for H: risk > alpha from the mean of n i.i.d. losses in [0, 1]."""
    hoeffding = math.exp(-n * _kl_bernoulli(min(mean_loss, alpha), alpha))
    bentkus = math.e * binomial_cdf(math.ceil(n * mean_loss - 1e-9), n, alpha)
    return min(1.0, hoeffding, bentkus)


def hoeffding_bentkus_upper(mean_loss: float, n: int, confidence: float) -> float:
    """The smallest alpha the Hoeffding-Bentkus test would certify at this confidence."""
    return _bisect_decreasing(lambda a: hoeffding_bentkus_p_value(mean_loss, n, a) if a > 0 else 1.0,
                              1.0 - confidence)


def betting_p_value(unit_losses: Sequence[float], alpha: float, confidence: float) -> float:
    """LTT's WSR p-value for H: risk > alpha from i.i.d. losses in [0, 1], in the order given (not sorted by loss).

    Waudby-Smith and Ramdas' betting test with the predictable bets of RCPS (Bates et al., arXiv 2101.02703,
    Sec. 3): a gambler bets against H by 1 - bet * (loss - alpha) per unit, bet in [0, 1] chosen from the losses
    before it. Under H the capital is a non-negative supermartingale from 1, so by Ville's inequality
    P(its maximum ever reaches 1 / p) <= p: p = 1 / max capital is valid. Unlike Hoeffding-Bentkus it adapts
    to the spread of the losses: many units with no loss and a few with a small share, the case of drives,
    certify an alpha Hoeffding would not.
    """
    n = len(unit_losses)
    scale = 2.0 * math.log(1.0 / (1.0 - confidence))
    log_capital = log_best = 0.0
    total = squares = 0.0
    variance = 0.25
    for i, loss in enumerate(unit_losses, start=1):
        bet = min(1.0, math.sqrt(scale / (n * variance)))
        factor = 1.0 - bet * (float(loss) - alpha)
        if factor <= 0.0:                  # all staked and lost: the capital stays 0
            break
        log_capital += math.log(factor)
        log_best = max(log_best, log_capital)
        total += float(loss)
        mean = (0.5 + total) / (i + 1)
        squares += (float(loss) - mean) ** 2
        variance = (0.25 + squares) / (i + 1)
    return min(1.0, math.exp(-log_best))


def betting_upper(unit_losses: Sequence[float], confidence: float) -> float:
    """The smallest alpha the betting test would certify at this confidence (its upper confidence bound)."""
    return _bisect_decreasing(lambda a: betting_p_value(unit_losses, a, confidence) if a > 0 else 1.0,
                              1.0 - confidence)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate: honest at 0 and 1 and for small n (unlike p +- 1.96 se)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # The interval always holds p; the clamp keeps rounding (1e-17 above 0 at k = 0) from putting p outside it.
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs b (only A) and c (only B): binomial(b+c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return float(min(1.0, 2.0 * tail))


class PairedBootstrap(TypedDict):
    """paired_bootstrap's result, JSON-ready: the mean difference and its [low, high] intervals."""

    diff: float
    ci90: list[float]
    ci95: list[float]


def paired_bootstrap(a: np.ndarray, b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                     seed: int = 0) -> PairedBootstrap:
    """Mean difference a - b over paired values and its 90% / 95% percentile intervals (seeds resampled)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired_bootstrap needs two equal, non-empty samples; got {a.shape} and {b.shape}")
    d = a - b
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(samples, d.size))].mean(axis=1)
    lo90, hi90, lo95, hi95 = np.percentile(means, [5.0, 95.0, 2.5, 97.5])
    return {"diff": float(d.mean()), "ci90": [float(lo90), float(hi90)], "ci95": [float(lo95), float(hi95)]}


def paired_rate_interval(x: np.ndarray, y: np.ndarray, z: float) -> list[float]:
    """Newcombe's interval (1998, method 10) for the difference of two paired rates, mean(x) - mean(y).

    Built from the two Wilson intervals and the correlation of the pairs, so it stays honest where
    a bootstrap collapses: with no discordant pair a bootstrap interval is [0, 0] at any n, this one
    is not (e.g. +-0.19 at 3 seeds, +-0.013 at 200). The correlation is Newcombe's corrected one
    (with AD > BC its numerator is max(AD - BC - N/2, 0), otherwise AD - BC; as in Altman et al. 2000,
    "Statistics with confidence", ch. 6): the plain phi is 1 when both settings crash on the same seeds
    and shrinks the interval to the Wilson intervals' asymmetry, [0, 0] for 15 shared crashes in 30 seeds.
    """
    x, y = np.asarray(x, dtype=bool), np.asarray(y, dtype=bool)
    n = x.size
    a, b = int(np.sum(x & y)), int(np.sum(x & ~y))
    c, d = int(np.sum(~x & y)), int(np.sum(~x & ~y))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    denominator = math.sqrt(float((a + b) * (c + d) * (a + c) * (b + d)))
    association = a * d - b * c
    corrected = association - n / 2 if association > n / 2 else min(association, 0)
    phi = corrected / denominator if denominator > 0 else 0.0
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return [p1 - p2 - delta, p1 - p2 + epsilon]


def bootstrap_mean_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> list[float]:
    """95% percentile interval of a mean (seeds resampled)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(samples, values.size))].mean(axis=1)
    return [float(v) for v in np.percentile(means, [2.5, 97.5])]


def paired_map_bootstrap(diff: np.ndarray, maps: np.ndarray, resamples: int = 10000, seed: int = 0) -> list[float]:
    """95% interval of the mean per-frame difference, resampling whole maps (frames of one map are not independent)."""
    by_map = [diff[maps == m] for m in np.unique(maps)]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(by_map), (resamples, len(by_map)))
    sums, counts = np.array([d.sum() for d in by_map]), np.array([len(d) for d in by_map])
    means = sums[picks].sum(1) / counts[picks].sum(1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
