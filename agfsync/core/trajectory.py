"""Proxy vs gold during training (pure: numpy only).

results/{model}/trajectory.json (rule eval_trajectory, agfsync.stages.trajectory) holds, per
evaluated point of training (step 0 = the base model, the snapshots of train.snapshots, the
final step), the means over the same held-out prompts and seeds of the proxy reward (the
stage-3 weighted total of the AI judges) and, where a gold standard exists (eval.tifa.gold),
of gold accuracy, each with its change from step 0 as a paired bootstrap CI.

`warning(points)` is the reward-hacking watch: over the last checkpoints, did the proxy rise
while gold fell? It returns the sentence the report prints, or None.
"""

from __future__ import annotations

from agfsync.core import stats

LAST = 3  # the watch compares the last LAST points (e.g. 50%, 75% and 100% of the steps)
POSSIBLE = "Possible reward hacking (not significant)"  # how the sentence starts when gold's fall is within noise


def point(step: int, fraction: float, per_prompt: dict[str, list[float]], base: dict[str, list[float]],
          seed: int) -> dict:
    """One point: for each measure (proxy, gold, ...) the mean with its CI, and the change
    from step 0 (`base`, the same prompts in the same order) with a paired CI."""
    out = {"step": step, "fraction": fraction, "n": None}
    for name, values in per_prompt.items():
        mean = stats.mean_ci(values, seed=seed)
        delta = stats.paired_delta(base[name], values, seed=seed)
        out[name] = {"mean": mean.value, "ci_low": mean.ci_low, "ci_high": mean.ci_high,
                     "delta": delta.value, "delta_ci_low": delta.ci_low, "delta_ci_high": delta.ci_high}
        out["n"] = mean.n
    return out


def warning(points: list[dict], per_prompt: dict[int, dict[str, list[float]]] | None = None,
            seed: int = 0) -> str | None:
    """The reward-hacking sentence, or None: over the last LAST points (at least 2), the
    proxy ended higher and gold lower than where they started. `per_prompt` (step -> measure
    -> per-prompt values), when given, adds the paired CI of gold's fall, and a fall whose CI
    includes 0 is called possible, not significant (a reader must not act on noise)."""
    if "gold" not in (points[0] if points else {}):
        return None
    last = points[-LAST:]
    if len(last) < 2:
        return None
    first, end = last[0], last[-1]
    proxy_change = end["proxy"]["mean"] - first["proxy"]["mean"]
    gold_change = end["gold"]["mean"] - first["gold"]["mean"]
    if not (proxy_change > 0 and gold_change < 0):
        return None
    detail, significant = "", True
    if per_prompt is not None:
        fall = stats.paired_delta(per_prompt[first["step"]]["gold"], per_prompt[end["step"]]["gold"], seed=seed)
        detail = f" (95% CI {100 * fall.ci_low:+.1f} to {100 * fall.ci_high:+.1f})"
        significant = fall.ci_high < 0
    best = max(points, key=lambda p: p["gold"]["mean"])
    head = "Reward-hacking warning" if significant else POSSIBLE
    tail = ("the model learns what the AI judges reward, not what the prompts ask" if significant else
            f"the fall of gold is within the noise of {end.get('n') or 'these'} prompts (its 95% CI includes 0), "
            "so this may be chance; watch it with more prompts or more training")
    return (f"{head}: from step {first['step']} to step {end['step']} the proxy reward rose by "
            f"{proxy_change:+.2f} while gold accuracy fell by {100 * gold_change:+.1f} points{detail}: {tail}. "
            f"The best gold accuracy was at step {best['step']} ({100 * best['gold']['mean']:.1f}%).")
