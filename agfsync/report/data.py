"""What the report reads of one model's results, loaded once (pure: JSON, JSONL; no torch).

`files` is one model's entry of agfsync.core.dag.report_paths; a file that does not exist
(a run without training yet, `agfsync report` on part of a results tree, a unit test) leaves
its part empty and the page says so where it would have shown it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agfsync.core.io import read_json, read_jsonl
from agfsync.report.verdicts import left_out_reason, unresponsive


@dataclasses.dataclass
class ModelData:
    model: str
    results: dict[str, dict]                   # metric -> result file (results/{model}/{metric}.json)
    per_image: dict[str, dict[str, dict]]      # variant -> prompt id -> per-image TIFA row
    prompts: dict[str, dict]                   # TIFA prompt id -> record (prompt, group, qa, split)
    tifa_shards: dict[str, list[Path]]         # variant -> TIFA image shards
    eval_shards: dict[str, dict[str, Path]]    # bench -> variant -> first shard (samples)
    trajectory: dict | None
    train_rows: list[dict]
    train_summary: dict | None
    pairs: list[dict]
    pairs_summary: dict | None
    prompts_summary: dict | None
    candidate_shards: dict[str, Path]          # shard name (00000) -> candidate images
    score_shards: dict[str, Path]              # shard name -> their sub-scores

    @property
    def left_out(self) -> dict[str, str]:
        """Metrics the page leaves out, with the reason (verdicts.unresponsive); their numbers
        stay in their result files and in metrics.tsv."""
        return {m: left_out_reason(m, r) for m, r in self.results.items()
                if isinstance(r.get("difference"), dict) and unresponsive(r["difference"])}

    @property
    def shown(self) -> dict[str, dict]:
        """The results the page shows: all but the left-out ones."""
        left_out = self.left_out
        return {m: r for m, r in self.results.items() if m not in left_out}

    @property
    def gold(self) -> bool:
        return "gold" in self.results

    def accuracy_key(self) -> str | None:
        """The per-image correctness the grids and distributions use: gold_correct when a gold
        standard exists, else TIFA's `correct`; None without per-image rows."""
        rows = [r for by_id in self.per_image.values() for r in by_id.values()]
        if not rows:
            return None
        return "gold_correct" if all("gold_correct" in r for r in rows) else "correct"


def _exists(path) -> bool:
    return bool(path) and Path(path).exists()


def _json(path):
    return read_json(path) if _exists(path) else None


def _paths(values) -> list[Path]:
    return [Path(p) for p in values or () if _exists(p)]


def load(model: str, files: dict) -> ModelData:
    tifa = files.get("tifa") or {}
    per_image = {}
    for variant, paths in (tifa.get("scores") or {}).items():
        rows = [row for path in _paths(paths) for row in read_jsonl(path, required=("prompt_id",))]
        per_image[variant] = {row["prompt_id"]: row for row in rows}
    if set(per_image) != {"base", "agfsync"}:
        per_image = {}
    prompts = {r["id"]: r for r in read_jsonl(tifa["prompts"], required=("id",))} if _exists(tifa.get("prompts")) else {}
    return ModelData(
        model=model,
        results={m: read_json(p) for m, p in (files.get("metrics") or {}).items() if _exists(p)},
        per_image=per_image, prompts=prompts,
        tifa_shards={v: _paths(p) for v, p in (tifa.get("shards") or {}).items()},
        eval_shards={b: {v: Path(p) for v, p in by_variant.items()} for b, by_variant in
                     (files.get("eval_shards") or {}).items()},
        trajectory=_json(files.get("trajectory")),
        train_rows=read_jsonl(files["train_metrics"], torn_tail="skip") if _exists(files.get("train_metrics")) else [],
        train_summary=_json(files.get("train_summary")),
        pairs=read_jsonl(files["pairs"]) if _exists(files.get("pairs")) else [],
        pairs_summary=_json(files.get("pairs_summary")),
        prompts_summary=_json(files.get("prompts_summary")),
        candidate_shards={k: Path(p) for k, p in (files.get("candidate_shards") or {}).items()},
        score_shards={k: Path(p) for k, p in (files.get("score_shards") or {}).items()},
    )
