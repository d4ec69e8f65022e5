"""Proxy vs gold along training: the snapshot steps (agfsync.train.snapshots) and the
reward-hacking watch (agfsync.core.trajectory). Pure parts; the rule's images are tested in
the world demo's tests."""

from __future__ import annotations

import numpy as np
import pytest

from agfsync.core import stats, trajectory


@pytest.mark.parametrize("fractions, total, steps", [
    ((0.25, 0.5, 0.75), 300, [75, 150, 225]),
    ((0.25, 0.5, 0.75), 10, [2, 5, 8]),           # round half to even: 2.5 -> 2, 7.5 -> 8
    ((0.5, 0.5, 0.001, 0.999), 100, [50]),        # duplicates, 0 and the final step are not snapshots
    ((), 100, []),
])
def test_snapshot_steps(fractions, total, steps):
    from agfsync.train.snapshots import snapshot_steps

    assert snapshot_steps(fractions, total) == steps


def _points(proxy, gold, n=40, seed=0):
    """Per-prompt values whose means are exactly `proxy[i]` and `gold[i]` (noise sums to 0)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 0.05, n)
    noise -= noise.mean()
    per_step = {}
    for i, (p, g) in enumerate(zip(proxy, gold)):
        per_step[i * 10] = {"proxy": list(p + noise), "gold": list(np.clip(g + noise, 0, 1))}
    points = [trajectory.point(step, step / 40, values, per_step[0], seed=3) for step, values in per_step.items()]
    return points, per_step


def test_a_point_carries_means_changes_and_their_intervals():
    points, per_step = _points([50.0, 51.0], [0.4, 0.45])
    second = points[1]
    assert second["step"] == 10 and second["fraction"] == 0.25 and second["n"] == 40
    assert second["proxy"]["mean"] == pytest.approx(51.0)
    assert second["proxy"]["delta"] == pytest.approx(1.0)
    expected = stats.paired_delta(per_step[0]["gold"], per_step[10]["gold"], seed=3)
    assert (second["gold"]["delta_ci_low"], second["gold"]["delta_ci_high"]) == (expected.ci_low, expected.ci_high)
    assert points[0]["gold"]["delta"] == 0.0


def test_the_watch_warns_when_proxy_rises_while_gold_falls_over_the_last_points():
    points, per_step = _points([50.0, 52.0, 54.0, 55.0, 56.0], [0.40, 0.46, 0.47, 0.44, 0.41])
    text = trajectory.warning(points, per_step, seed=0)
    assert text.startswith("Reward-hacking warning: from step 20 to step 40 the proxy reward rose by +2.00 while "
                           "gold accuracy fell by -6.0 points (")
    assert "The best gold accuracy was at step 20 (47.0%)." in text


@pytest.mark.parametrize("proxy, gold", [
    ([50.0, 52.0, 54.0, 55.0], [0.40, 0.44, 0.46, 0.48]),   # both rise: fine
    ([50.0, 52.0, 51.0, 50.5], [0.40, 0.44, 0.43, 0.42]),   # both fall: not hacking
    ([50.0, 51.0], [0.40, 0.38]),                           # two points only: base and final
])
def test_no_warning_otherwise(proxy, gold):
    points, per_step = _points(proxy, gold)
    expected = None
    if len(proxy) == 2:  # with only two points the watch compares them
        expected = trajectory.warning(points, per_step)
        assert expected is not None and "from step 0 to step 10" in expected
        return
    assert trajectory.warning(points, per_step) is expected


def test_no_gold_no_warning():
    points = [{"step": 0, "proxy": {"mean": 1.0}}, {"step": 5, "proxy": {"mean": 2.0}}]
    assert trajectory.warning(points) is None


def test_a_fall_of_gold_within_noise_is_called_possible_not_a_warning():
    """Proxy up, gold down by 1 point whose paired CI includes 0: the sentence says so."""
    rng = np.random.default_rng(1)
    base = list(rng.uniform(0.2, 0.6, 60))
    per_step = {0: {"proxy": [50.0] * 60, "gold": base},
                10: {"proxy": [51.0] * 60, "gold": list(np.array(base) + rng.normal(0.0, 0.10, 60))},
                20: {"proxy": [52.0] * 60, "gold": list(np.array(base) + rng.normal(0.0, 0.10, 60))}}
    shift = np.mean(per_step[20]["gold"]) - np.mean(base) + 0.01
    per_step[20]["gold"] = list(np.array(per_step[20]["gold"]) - shift)  # 1 point below step 0
    points = [trajectory.point(step, step / 20, values, per_step[0], seed=3) for step, values in per_step.items()]
    text = trajectory.warning(points, per_step, seed=0)
    fall = stats.paired_delta(per_step[0]["gold"], per_step[20]["gold"], seed=0)
    assert fall.ci_low < 0 < fall.ci_high
    assert text.startswith("Possible reward hacking (not significant): from step 0 to step 20 the proxy reward rose "
                           "by +2.00 while gold accuracy fell by -1.0 points (")
    assert "within the noise of 60 prompts (its 95% CI includes 0)" in text
    assert "Reward-hacking warning" not in text
