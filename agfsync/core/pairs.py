"""Stage 4, rule pairs_select: best vs worst candidate of each prompt (pure, no torch).

The scores files hold the sub-scores (vqa, clip, aesthetic; stage 3). The weighted total
sum_k w_k * s_k (scores.weights; paper 0.35 / 0.55 / 0.10) is computed here, so that a
change of the weights reruns this gather and not the scoring. The pairs and the summary
carry the totals, and the summary the weights they were computed with.
winner = argmax, loser = argmin of the total among the prompt's N candidates.
Dropped and counted (the authors' code had no such guards):
  missing_scores   fewer than N scored candidates, or a score that is missing or not finite
  tie              the best or the worst total is shared by two candidates (no unique choice)
  small_margin     total(winner) - total(loser) < pairs.min_margin
"""

from __future__ import annotations

import logging
import math
from collections import Counter

import numpy as np

from agfsync.core.ids import check_id, read_records, record_lines
from agfsync.core.io import DataError, read_jsonl, write_json, write_jsonl

log = logging.getLogger(__name__)

SUBSCORES = ("vqa", "clip", "aesthetic")
DROP_REASONS = ("missing_scores", "tie", "small_margin")


def weighted_total(scores: dict, weights: dict) -> float:
    """sum_k w_k * s_k over the sub-scores (each on 0..100)."""
    return float(sum(weights[k] * scores[k] for k in SUBSCORES))


def _finite(row: dict) -> bool:
    return all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) for k in (*SUBSCORES, "total"))


def with_total(row: dict, weights: dict) -> dict:
    """The row with its weighted total: none when a sub-score is missing or not a number
    (select_pair then drops the prompt as missing_scores). A total already in the row is
    not trusted: it is always computed from the sub-scores and these weights."""
    out = {k: v for k, v in row.items() if k != "total"}
    if all(isinstance(row.get(k), (int, float)) for k in SUBSCORES):
        out["total"] = weighted_total(row, weights)
    return out


def select_pair(rows: list[dict], num_candidates: int, min_margin: float) -> tuple[dict | None, str | None]:
    """(pair, None) or (None, drop reason) for one prompt's scored candidates."""
    if len({r["candidate"] for r in rows}) < num_candidates or not all(_finite(r) for r in rows):
        return None, "missing_scores"
    ordered = sorted(rows, key=lambda r: (-r["total"], r["candidate"]))
    winner, loser = ordered[0], ordered[-1]
    if ordered[1]["total"] == winner["total"] or ordered[-2]["total"] == loser["total"]:
        return None, "tie"
    margin = winner["total"] - loser["total"]
    if margin < min_margin:
        return None, "small_margin"
    return {"winner": winner, "loser": loser, "margin": margin}, None


def _distribution(values) -> dict:
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {"count": 0}
    low, high = float(values.min()), float(values.max())
    if high - low <= 1e-9 * max(1.0, abs(high)):  # all equal to rounding: numpy refuses 20 bins of ~zero width
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=20, range=(low, high))
    return {
        "count": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
        "min": float(values.min()), "p50": float(np.median(values)), "max": float(values.max()),
        "histogram": {"counts": counts.tolist(), "edges": [round(float(e), 4) for e in edges]},
    }


def _side(row: dict, shard: str) -> dict:
    keys = ("candidate", "image", "seed", *SUBSCORES, "total")
    return {**{k: row[k] for k in keys}, "shard": shard}


def select_pairs(settings, score_paths: list, qa_path, shard_paths: list, out_path, summary_path) -> dict:
    """Gather every shard's scores, pick one pair per prompt, write pairs JSONL + summary JSON.
    settings: agfsync.core.sections.Settings with candidates.num_per_prompt, pairs and
    scores.weights (what rule pairs_select declares)."""
    if len(score_paths) != len(shard_paths):
        raise ValueError("select_pairs needs one scores file per shard")
    prompts = {r["id"]: r for r in read_records(qa_path, required=("id", "prompt"))}
    n, min_margin = settings.candidates.num_per_prompt, settings.pairs.min_margin
    weights = {k: getattr(settings.scores.weights, k) for k in sorted(SUBSCORES)}  # the summary's order, as always
    pairs, dropped, all_rows = [], Counter(), []
    dropped_items = []
    seen: dict[tuple, str] = {}  # (prompt id, candidate) -> "scores file, line N" of its first row
    for score_path, shard_path in zip(score_paths, shard_paths):
        rows = read_jsonl(score_path, required=("prompt_id", "candidate"))
        groups: dict[str, list[dict]] = {}
        for row, number in zip(rows, record_lines(score_path)):
            where = f"{score_path}, line {number}"
            if not isinstance(row["candidate"], int) or isinstance(row["candidate"], bool):
                raise DataError(f"{where}: candidate {row['candidate']!r} is not an integer")
            key = (check_id(row["prompt_id"], where), row["candidate"])
            if key in seen:  # a second score of one image, or a prompt in two shards: never two pairs
                raise DataError(f"{where}: duplicate score of prompt id {key[0]!r} candidate {key[1]!r} "
                                f"(first at {seen[key]})")
            seen[key] = where
            groups.setdefault(row["prompt_id"], []).append(with_total(row, weights))
        for prompt_id, group in groups.items():
            if prompt_id not in prompts:
                raise DataError(f"{score_path}: record {prompt_id} is not a prompt of {qa_path}")
            all_rows += group
            pair, reason = select_pair(group, n, min_margin)
            if pair is None:
                dropped[reason] += 1
                dropped_items.append({"prompt_id": prompt_id, "reason": reason})
                continue
            record = prompts[prompt_id]
            if settings.pairs.swap:  # the negative control: the judges' preference reversed
                pair = {**pair, "winner": pair["loser"], "loser": pair["winner"], "margin": -pair["margin"]}
            pairs.append({
                "prompt_id": prompt_id, "prompt": record["prompt"], "category": record.get("category"),
                "margin": pair["margin"], "winner": _side(pair["winner"], str(shard_path)),
                "loser": _side(pair["loser"], str(shard_path)),
            })
    write_jsonl(out_path, pairs)
    summary = {
        "num_prompts_scored": len(pairs) + sum(dropped.values()),
        "num_pairs": len(pairs),
        "dropped": {reason: dropped.get(reason, 0) for reason in DROP_REASONS},
        "dropped_items": dropped_items[:200],
        "min_margin": min_margin,
        "swapped": settings.pairs.swap,
        "weights": weights,
        "margin": _distribution([p["margin"] for p in pairs]),
        "scores": {k: _distribution([r[k] for r in all_rows if _finite(r)]) for k in (*SUBSCORES, "total")},
        "winner_mean": {k: float(np.mean([p["winner"][k] for p in pairs])) if pairs else None for k in (*SUBSCORES, "total")},
        "loser_mean": {k: float(np.mean([p["loser"][k] for p in pairs])) if pairs else None for k in (*SUBSCORES, "total")},
    }
    write_json(summary_path, summary)
    log.info("pairs: %d pairs from %d prompts (weights %s); dropped %s", len(pairs), summary["num_prompts_scored"],
             weights, dict(dropped))
    return summary
