"""Stage 1a, rule prompts_generate: an LLM writes image descriptions over 12 categories.

Pure logic (no torch): category rules and examples, request building, answer parsing,
exact and near-duplicate removal through an injected embedder, and the round loop that
asks for more batches until each category reaches its target. Processing follows
(round, category, batch) order, never thread timing, so outputs are deterministic given
the (cached) answers. Prompt ids are `<category slug>-<10 hex of sha1(normalised text)>`:
stable across reruns and safe in paths.

Method: docs/method.md, Prompts (paper code: GPT-3.5, temperature 0.9, top_p 0.7, ~20
descriptions per call as JSON {"descriptions": [...]}, near-duplicates dropped at cosine
>= 0.90 within a category).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from agfsync.llm.answers import BadOutput, ask_json, extract_json, run_concurrently, tally_failures
from agfsync.llm.base import Reply, Request
from agfsync.llm.client import LLMClient
from agfsync.core.categories import CATEGORIES, Category, category  # noqa: F401 (re-exported)
from agfsync.core.ids import read_records
from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from agfsync.core.sections import PromptsSettings, Settings

log = logging.getLogger(__name__)


SYSTEM_RULES = """You write descriptions of images for a text-to-image model.
Rules:
1. Describe what can be seen: objects, people or animals, their number, colors, materials, shapes, actions and where things are relative to each other.
2. Nothing scary, violent, sexual or offensive.
3. Never repeat a description or write near-copies of one.
4. Be diverse: different subjects, settings, times of day, styles and viewpoints.
5. Vary the length: some short (8 words), most medium (15-30 words), some long (up to 50 words).
6. Be concrete and detailed; no story, no sounds or smells, no text to be rendered.
Answer with a JSON object and nothing else: {"descriptions": ["...", "..."]}"""

MIN_WORDS, MAX_WORDS = 3, 80
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*\u2022])\s*")


def system_message(cat: Category) -> str:
    examples = "\n".join(f"- {example}" for example in cat.examples)
    return f"{SYSTEM_RULES}\n\nCategory: {cat.name} ({cat.focus}).\nExamples of good descriptions:\n{examples}"


def build_request(cat: Category, batch: int, count: int, seed: int) -> Request:
    user = (
        f"Write {count} new descriptions of images in the category \"{cat.name}\". "
        f"This is batch {batch + 1}: do not reuse the examples or subjects of earlier batches."
    )
    return Request(
        key=f"prompts/{cat.slug}/batch{batch:03d}",
        messages=({"role": "system", "content": system_message(cat)}, {"role": "user", "content": user}),
        seed=derive_seed(seed, "prompts", cat.slug, batch, bits=31),
    )


def parse_descriptions(reply: Reply) -> list[str]:
    """Descriptions from an answer; BadOutput when none is usable (triggers a repair)."""
    obj = extract_json(reply)
    if "descriptions" not in obj:
        raise BadOutput(f"the JSON object lacks the field 'descriptions' (has: {', '.join(map(repr, obj)) or 'nothing'})")
    items = obj["descriptions"]
    if not isinstance(items, list):
        raise BadOutput(f"'descriptions' must be a list of strings, got {type(items).__name__}")
    out = []
    for item in items:
        if not isinstance(item, str):
            continue
        text = " ".join(_NUMBERING.sub("", item).split())
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            out.append(text)
    if not out:
        raise BadOutput(f"no usable description among {len(items)} item(s) (strings of {MIN_WORDS}-{MAX_WORDS} words)")
    return out


def normalise(text: str) -> str:
    """Key for exact duplicates: case, spacing and trailing punctuation do not count."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def prompt_id(cat: Category, text: str) -> str:
    return f"{cat.slug}-{hashlib.sha1(normalise(text).encode('utf-8')).hexdigest()[:10]}"


Embedder = Callable[[Sequence[str]], np.ndarray]  # texts -> (n, d) L2-normalised rows


class NearDuplicateFilter:
    """Keeps a text unless its normalised form was kept, or its cosine similarity to a kept
    text is >= threshold. One instance per category."""

    def __init__(self, embed: Embedder, threshold: float):
        self.embed = embed
        self.threshold = threshold
        self._keys: dict[str, str] = {}
        self._ids: list[str] = []
        self._vectors: np.ndarray | None = None
        self._reserved: dict[str, str] = {}

    def reserve(self, texts: Sequence[str], label: str) -> None:
        """Texts no prompt may equal (after normalise): a match is dropped as
        "evaluation prompt <label>" (prompts.exclude_eval_prompts)."""
        self._reserved.update({normalise(t): label for t in texts})

    def filter(self, texts: Sequence[str], ids: Sequence[str]) -> list[str | None]:
        """For each text: None if kept, else the reason it was dropped."""
        verdicts: list[str | None] = []
        vectors = self.embed(list(texts)) if texts else None
        for i, (text, pid) in enumerate(zip(texts, ids)):
            key = normalise(text)
            if key in self._reserved:
                verdicts.append(f"evaluation prompt {self._reserved[key]}")
                continue
            if key in self._keys:
                verdicts.append(f"exact duplicate of {self._keys[key]}")
                continue
            vector = vectors[i]
            if self._vectors is not None and len(self._ids):
                sims = self._vectors @ vector
                j = int(np.argmax(sims))
                if sims[j] >= self.threshold:
                    verdicts.append(f"near duplicate of {self._ids[j]} (cosine {sims[j]:.3f})")
                    continue
            self._keys[key] = pid
            self._ids.append(pid)
            row = vector[None, :]
            self._vectors = row if self._vectors is None else np.vstack([self._vectors, row])
            verdicts.append(None)
        return verdicts


def generate_prompts(
    prompts: PromptsSettings, client: LLMClient, embed: Embedder, *, seed: int,
    progress: Callable[[int], object] | None = None, exclude: Sequence[dict] = (),
) -> tuple[list[dict], dict]:
    """Run the prompt-writing stage over the settings of `prompts`; request seeds derive from `seed`.
    `exclude`: evaluation prompt records {id, prompt} that no kept prompt may equal.

    Returns (records, summary). Records are ordered by category, then by the order the
    model wrote them.
    """
    cats = [category(name) for name in (prompts.categories or CATEGORIES)]
    target, per_request = prompts.per_category, prompts.descriptions_per_request
    max_batches = prompts.max_requests_per_category or 3 * math.ceil(target / per_request)
    threshold = prompts.dedup.threshold

    kept: dict[str, list[dict]] = {c.slug: [] for c in cats}
    batches = {c.slug: 0 for c in cats}
    filters = {c.slug: NearDuplicateFilter(embed, threshold) for c in cats}
    for dedup in filters.values():
        for record in exclude:
            dedup.reserve([record["prompt"]], record["id"])
    counts = {c.slug: {"received": 0, "exact_duplicates": 0, "near_duplicates": 0, "eval_prompts": 0, "surplus": 0}
              for c in cats}
    skipped, dropped_examples = [], []
    outcomes = []  # every request's outcome, for the failure tally
    repaired = 0

    round_no = 0
    while True:
        todo = []
        for cat in cats:
            missing = target - len(kept[cat.slug])
            left = max_batches - batches[cat.slug]
            if missing <= 0 or left <= 0:
                continue
            for _ in range(min(math.ceil(missing / per_request), left)):
                todo.append((cat, batches[cat.slug]))
                batches[cat.slug] += 1
        if not todo:
            break
        round_no += 1
        log.info("prompts: round %d: %d request(s) for %d categories", round_no, len(todo), len({c.slug for c, _ in todo}))

        def ask(item):
            cat, batch = item
            return ask_json(client, build_request(cat, batch, per_request, seed), parse_descriptions)

        for (cat, batch), outcome in zip(todo, run_concurrently(ask, todo, client.settings.concurrency)):
            if progress:
                progress(1)
            outcomes.append(outcome)
            if not outcome.ok:
                skipped.append({"key": outcome.key, "category": cat.name, "reasons": outcome.reasons,
                                "outage": outcome.outage})
                log.warning("prompts: skipped %s: %s", outcome.key, "; ".join(outcome.reasons))
                continue
            texts = outcome.value
            repaired += outcome.attempts > 1
            counts[cat.slug]["received"] += len(texts)
            room = target - len(kept[cat.slug])
            if room <= 0:
                counts[cat.slug]["surplus"] += len(texts)
                continue
            ids = [prompt_id(cat, t) for t in texts]
            verdicts = filters[cat.slug].filter(texts, ids)
            for position, (text, pid, verdict) in enumerate(zip(texts, ids, verdicts)):
                if verdict is not None:
                    kind = verdict.split(" ", 1)[0]
                    counts[cat.slug][{"exact": "exact_duplicates", "near": "near_duplicates"}.get(kind, "eval_prompts")] += 1
                    if len(dropped_examples) < 50:
                        dropped_examples.append({"prompt": text, "reason": verdict})
                    continue
                if len(kept[cat.slug]) >= target:
                    counts[cat.slug]["surplus"] += 1
                    continue
                kept[cat.slug].append(
                    {
                        "id": pid,
                        "category": cat.name,
                        "prompt": text,
                        "num_words": len(text.split()),
                        "source": f"{outcome.key}[{position}]",
                    }
                )

    records = [record for cat in cats for record in kept[cat.slug]]
    per_category = {
        cat.name: {"kept": len(kept[cat.slug]), "target": target, "requests": batches[cat.slug], **counts[cat.slug]}
        for cat in cats
    }
    short = {name: v["kept"] for name, v in per_category.items() if v["kept"] < target}
    for name, got in short.items():
        log.warning("prompts: category %r has %d of %d prompts (requests exhausted)", name, got, target)
    summary = {
        "num_prompts": len(records),
        "target_per_category": target,
        "categories_short": short,
        "per_category": per_category,
        "mean_words": round(float(np.mean([r["num_words"] for r in records])), 2) if records else 0.0,
        "num_repaired_requests": repaired,
        "skipped_requests": skipped,
        "failures": tally_failures(outcomes),
        "dropped_examples": dropped_examples,
        "dedup": {"threshold": threshold, "embedder": prompts.dedup.embedder},
        "excluded_eval_prompts": len(exclude),
        "llm": {"model": client.settings.model, "provider": client.settings.provider, **client.stats.as_dict()},
    }
    return records, summary


def run(settings: Settings, inputs: Mapping, outputs: Mapping, **wildcards) -> dict:
    """Rule prompts_generate (`agfsync prompts`): prompts into outputs["prompts"], the summary
    into outputs["summary"]. Recorded answers (prompts.llm.responses) are read from the
    settings, not from inputs; with prompts.exclude_eval_prompts, inputs["eval_prompts"] are
    the evaluation benchmarks' prompt lists (results/eval/{bench}/prompts.jsonl)."""
    exclude = []
    if settings.prompts.exclude_eval_prompts:
        paths = inputs.get("eval_prompts") or []
        for path in [paths] if isinstance(paths, str) else paths:
            exclude += read_records(path, required=("id", "prompt"))
    return write_prompts(settings, outputs["prompts"], outputs["summary"], exclude=exclude)


def write_prompts(settings: Settings, out_path, summary_path, exclude: Sequence[dict] = ()) -> dict:
    """Run the stage with the LLM of prompts.llm and the embedder of prompts.dedup, write the
    prompts (JSONL) and the summary (JSON) atomically. Returns the summary.

    Fails (YieldTooLow, nothing written) when the stage produced no prompt, or fewer than
    prompts.llm.min_yield of the target (per_category x categories), naming the causes.
    Every API key the settings name is masked in what is written."""
    from tqdm import tqdm

    from agfsync.core.io import write_json, write_jsonl
    from agfsync.core.secrets import redact_obj, secret_values
    from agfsync.llm.answers import check_yield
    from agfsync.llm.client import LLMClient
    from agfsync.models.text_embed import bge_embedder, clip_text_embedder, ngram_embed

    prompts = settings.prompts
    client = LLMClient(prompts.llm, stage="prompts", cache_path=f"{settings.llm_cache_dir}/prompts.jsonl",
                       secrets=secret_values(settings.to_dict()))
    # read only the weights the embedder uses: the job's params leave prompts.dedup.model out otherwise
    model = {"bge": lambda: prompts.dedup.model, "clip": lambda: settings.scores.clip.model,
             "ngram": lambda: None}[prompts.dedup.embedder]()
    embedders = {"bge": bge_embedder, "clip": clip_text_embedder}
    embed = embedders[prompts.dedup.embedder](model, device=settings.device) if model else ngram_embed
    with tqdm(desc="prompts: LLM requests", unit="req", mininterval=2.0) as bar:
        records, summary = generate_prompts(prompts, client, embed, seed=settings.seed, progress=bar.update,
                                            exclude=exclude)
    client.log_summary()
    summary["dedup"]["model"] = model  # the embedder's weights (None: ngram needs none)
    asked = summary["target_per_category"] * len(summary["per_category"])
    check_yield("prompts", produced=len(records), asked=asked, unit="prompts", tally=summary["failures"],
                requests="requests", min_yield=prompts.llm.min_yield)
    records, summary = redact_obj(records), redact_obj(summary)
    write_jsonl(out_path, records)
    write_json(summary_path, summary)
    log.info("prompts: wrote %d prompts to %s", len(records), out_path)
    return summary
