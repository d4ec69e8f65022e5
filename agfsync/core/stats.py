"""Confidence intervals for base-vs-AGFSync comparisons (pure: numpy only).

Every difference the report states carries a paired bootstrap CI over prompts: the same
prompts (and seeds) are drawn for both models, so a resample draws prompts with
replacement and keeps each prompt's pair together. Percentile intervals, `resamples`
draws from numpy's PCG64 seeded with `seed`: the same inputs give the same interval.
"""

from __future__ import annotations

import dataclasses

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95
_CHUNK = 2_000_000  # indices drawn at once (memory: 16 MB)


@dataclasses.dataclass(frozen=True)
class Interval:
    value: float
    ci_low: float
    ci_high: float
    n: int
    resamples: int
    seed: int
    level: float = LEVEL

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _values(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected a non-empty list of numbers, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: {int((~np.isfinite(array)).sum())} value(s) are not finite")
    return array


def bootstrap_means(values, *, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """The means of `resamples` resamples (with replacement, same size) of `values`."""
    array = _values(values, "bootstrap")
    rng = np.random.default_rng(seed)
    n = array.size
    means = np.empty(resamples)
    per_chunk = max(1, _CHUNK // n)
    for start in range(0, resamples, per_chunk):
        rows = min(per_chunk, resamples - start)
        means[start : start + rows] = array[rng.integers(0, n, size=(rows, n))].mean(axis=1)
    return means


def mean_ci(values, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """The mean of `values` with its percentile bootstrap CI."""
    array = _values(values, "mean_ci")
    means = bootstrap_means(array, resamples=resamples, seed=seed)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return Interval(float(array.mean()), float(low), float(high), int(array.size), resamples, seed, level)


def paired_delta(base, tuned, *, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> Interval:
    """mean(tuned - base) over paired units (prompts), with the paired bootstrap CI."""
    base_a, tuned_a = _values(base, "paired_delta: base"), _values(tuned, "paired_delta: tuned")
    if base_a.shape != tuned_a.shape:
        raise ValueError(f"paired_delta: {base_a.size} base values but {tuned_a.size} tuned ones (pairs must match)")
    return mean_ci(tuned_a - base_a, resamples=resamples, seed=seed, level=level)


def describe(interval: Interval, scale: float = 1.0, unit: str = "", digits: int = 1) -> str:
    """'+9.2 points (95% CI +6.8 to +11.5)' for a difference shown at `scale` (100 for points)."""
    def signed(x: float) -> str:
        return f"{x * scale:+.{digits}f}"

    suffix = f" {unit}" if unit else ""
    return (f"{signed(interval.value)}{suffix} ({interval.level:.0%} CI {signed(interval.ci_low)} to "
            f"{signed(interval.ci_high)})")
