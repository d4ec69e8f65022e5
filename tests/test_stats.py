"""agfsync.core.stats: paired bootstrap CIs over prompts."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from agfsync.core import stats


def test_paired_delta_is_the_percentile_bootstrap_of_the_differences_drawn_by_prompt():
    base = [0.5, 0.25, 1.0, 0.0, 0.75, 0.5]
    tuned = [0.75, 0.5, 1.0, 0.25, 0.75, 1.0]
    interval = stats.paired_delta(base, tuned, resamples=500, seed=3)
    # reference: the same generator, one loop per resample
    rng = np.random.default_rng(3)
    diff = np.subtract(tuned, base)
    means = [diff[rng.integers(0, 6, size=6)].mean() for _ in range(500)]
    assert interval.value == pytest.approx(0.2083333333333333)
    assert (interval.ci_low, interval.ci_high) == tuple(np.percentile(means, [2.5, 97.5]))
    assert (interval.n, interval.resamples, interval.seed) == (6, 500, 3)
    assert interval.excludes_zero


def test_chunks_draw_the_same_resamples_as_one_draw(monkeypatch):
    values = np.linspace(0, 1, 37) ** 2
    whole = stats.bootstrap_means(values, resamples=300, seed=9)
    monkeypatch.setattr(stats, "_CHUNK", 37 * 7)  # 7 resamples per chunk, the last one short
    assert np.array_equal(stats.bootstrap_means(values, resamples=300, seed=9), whole)


def test_interval_agrees_with_scipy_on_a_large_sample():
    rng = np.random.default_rng(0)
    base = rng.uniform(size=400)
    tuned = np.clip(base + rng.normal(0.05, 0.2, size=400), 0, 1)
    ours = stats.paired_delta(base, tuned, resamples=20_000, seed=1)
    theirs = scipy_stats.bootstrap((tuned - base,), np.mean, n_resamples=20_000, method="percentile",
                                   random_state=np.random.default_rng(2)).confidence_interval
    assert ours.ci_low == pytest.approx(theirs.low, abs=2e-3)
    assert ours.ci_high == pytest.approx(theirs.high, abs=2e-3)


def test_a_constant_difference_has_a_point_interval_and_no_change_includes_zero():
    same = stats.paired_delta([0.2, 0.4, 0.6], [0.3, 0.5, 0.7], resamples=100)
    assert (same.ci_low, same.ci_high) == pytest.approx((0.1, 0.1))
    none = stats.paired_delta([0.0, 1.0, 0.5, 0.5], [1.0, 0.0, 0.5, 0.5], resamples=1000)
    assert none.value == 0 and none.ci_low < 0 < none.ci_high and not none.excludes_zero


@pytest.mark.parametrize("base, tuned, message", [
    ([0.1, 0.2], [0.1], "paired_delta: 2 base values but 1 tuned ones (pairs must match)"),
    ([], [], "paired_delta: base: expected a non-empty list of numbers, got shape (0,)"),
    ([0.1, float("nan")], [0.1, 0.2], "paired_delta: base: 1 value(s) are not finite"),
])
def test_bad_input_is_named(base, tuned, message):
    with pytest.raises(ValueError) as err:
        stats.paired_delta(base, tuned)
    assert str(err.value) == message


def test_describe_in_points():
    interval = stats.Interval(0.092, 0.068, 0.115, 300, 10_000, 0)
    assert stats.describe(interval, 100, "points") == "+9.2 points (95% CI +6.8 to +11.5)"
