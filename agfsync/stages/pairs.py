"""Stage 4, rule pairs_select: best vs worst candidate of each prompt, over every shard.

The selection itself is pure and lives in agfsync.core.pairs (no torch); this is the stage
around it. Entry point: `run(settings, inputs, outputs)`, called by the rule's script and by
`agfsync pairs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from agfsync.core.pairs import select_pairs

if TYPE_CHECKING:
    from agfsync.core.sections import Settings


def _listed(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def run(settings: Settings, inputs: Mapping, outputs: Mapping, **wildcards) -> dict:
    """The scores of every shard (inputs["scores"]) and the matching candidate shards
    (inputs["shards"], same order), the prompts (inputs["qa"]): one pair per prompt into
    outputs["pairs"], the summary into outputs["summary"]. Reads candidates.num_per_prompt,
    pairs.min_margin and scores.weights. The wildcard (model) only names the job."""
    scores, shards = _listed(inputs["scores"]), _listed(inputs["shards"])
    if len(scores) != len(shards):
        raise ValueError(f"pairs: {len(scores)} scores file(s) but {len(shards)} shard(s); they must match, in order")
    return select_pairs(settings, scores, inputs["qa"], shards, outputs["pairs"], outputs["summary"])
