"""Stage 1a, rule prompts_generate: an LLM writes image descriptions over 12 categories.

Pure logic (no torch): category rules and examples, request building, answer parsing,
exact and near-duplicate removal through an injected embedder, and the round loop that
asks for more batches until each category reaches its target. Processing follows
(round, category, batch) order, never thread timing, so outputs are deterministic given
the (cached) answers. Prompt ids are `<category slug>-<10 hex of sha1(normalised text)>`:
stable across reruns and safe in paths.

Method: METHOD.md section 2 (paper code: GPT-3.5, temperature 0.9, top_p 0.7, ~20
descriptions per call as JSON {"descriptions": [...]}, near-duplicates dropped at cosine
>= 0.90 within a category).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from agfsync.llm import (
    BadOutput, LLMClient, Reply, Request, ask_json, extract_json, run_concurrently, tally_failures,
)
from agfsync.seeds import derive_seed

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Category:
    name: str
    focus: str
    examples: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


_CATEGORIES = (
    Category(
        "Natural Landscapes",
        "mountains, coasts, forests, deserts, rivers, skies, weather and seasons",
        (
            "A turquoise glacial lake beneath jagged snow-capped peaks, pine trees along the shore, early morning mist",
            "Rolling sand dunes at sunset with long shadows and a single set of footprints leading to the horizon",
            "A waterfall cascading over mossy black basalt cliffs into a green pool",
            "Autumn forest path covered in orange leaves, sunlight filtering through birch trees",
            "Lightning over a flat prairie under purple storm clouds",
        ),
    ),
    Category(
        "Cities & Architecture",
        "streets, skylines, buildings, interiors, bridges and historic or modern architecture",
        (
            "A narrow cobblestone street in Lisbon lined with blue tiled houses and a yellow tram",
            "Night skyline of glass skyscrapers reflected in a calm river",
            "The vaulted stone ceiling of a gothic cathedral with stained glass windows casting colored light",
            "A modern concrete library with a spiral staircase and floor-to-ceiling windows",
            "A red brick row of townhouses with white window frames and flower boxes",
        ),
    ),
    Category(
        "People",
        "portraits, everyday activities, professions, groups, clothing and expressions",
        (
            "An elderly fisherman mending a net on a wooden pier, wearing a yellow raincoat",
            "Two children laughing while flying a red kite on a grassy hill",
            "A chef in a white uniform plating a dessert in a busy restaurant kitchen",
            "A woman reading a book on a park bench under a cherry tree in bloom",
            "A street musician playing a saxophone under a lamppost at dusk",
        ),
    ),
    Category(
        "Animals",
        "wild and domestic animals, their behaviour, habitats and counts",
        (
            "A red fox curled up asleep in fresh snow, its tail over its nose",
            "Three ducklings following their mother across a pond",
            "A tabby cat stretching on a sunny windowsill next to a potted plant",
            "A humpback whale breaching beside a small sailboat",
            "Two giraffes standing under an acacia tree on the savanna",
        ),
    ),
    Category(
        "Plants",
        "flowers, trees, gardens, crops, houseplants and botanical details",
        (
            "A field of sunflowers facing the morning sun with a red barn in the distance",
            "Close-up of dew drops on a green fern leaf",
            "A bonsai pine tree in a blue ceramic pot on a wooden table",
            "A greenhouse full of hanging orchids in pink and white",
            "An ancient oak tree alone in a meadow of wildflowers",
        ),
    ),
    Category(
        "Food & Beverages",
        "dishes, ingredients, drinks, markets, cooking and table settings",
        (
            "A stack of fluffy pancakes with blueberries and maple syrup on a white plate",
            "A steaming bowl of ramen with a soft-boiled egg, scallions and nori",
            "A glass of iced lemonade with mint leaves on a wooden porch railing",
            "A market stall piled with red tomatoes, green peppers and purple eggplants",
            "A slice of chocolate cake with a raspberry on top beside a cup of espresso",
        ),
    ),
    Category(
        "Sports & Fitness",
        "athletes, games, stadiums, training, outdoor and indoor sports",
        (
            "A surfer riding the curl of a large blue wave",
            "A basketball player mid-jump dunking the ball in an indoor arena",
            "A yoga class on a rooftop at sunrise, everyone in warrior pose",
            "A cyclist in a green jersey climbing a winding mountain road",
            "Two tennis players shaking hands over the net on a clay court",
        ),
    ),
    Category(
        "Art & Culture",
        "paintings, sculpture, music, dance, festivals, traditions and art styles",
        (
            "A watercolor painting of a harbor with small fishing boats",
            "A marble statue of a dancer in a sunlit museum hall",
            "Paper lanterns glowing over a crowded night market during a festival",
            "A violinist performing on a stage lit by a single spotlight",
            "A mosaic of a peacock made from blue and green glass tiles",
        ),
    ),
    Category(
        "Technology & Industry",
        "machines, electronics, factories, laboratories, energy and engineering",
        (
            "A robotic arm assembling a car in a brightly lit factory",
            "Rows of wind turbines on green hills under a cloudy sky",
            "A laptop, a mechanical keyboard and two monitors on a tidy desk",
            "A scientist in a white coat looking into a microscope in a laboratory",
            "A vintage steam locomotive engine with brass gauges and pipes",
        ),
    ),
    Category(
        "Everyday Objects",
        "household items, tools, furniture, clothing and things on tables or shelves",
        (
            "A blue ceramic mug of coffee next to an open notebook and a pencil",
            "A pair of worn leather boots by a front door",
            "A wooden shelf with three potted succulents and a stack of books",
            "An old brass key lying on a red velvet cloth",
            "A yellow umbrella leaning against a white wall",
        ),
    ),
    Category(
        "Transportation",
        "cars, trains, boats, aircraft, bicycles, roads, stations and ports",
        (
            "A red double-decker bus crossing a bridge in the rain",
            "A small seaplane floating on a calm lake surrounded by pine forest",
            "A row of colorful bicycles parked along a canal",
            "A high-speed train passing a field of rapeseed flowers",
            "A cargo ship loaded with stacked containers entering a harbor at dusk",
        ),
    ),
    Category(
        "Abstract & Conceptual",
        "visual metaphors, surreal scenes, patterns, shapes and concepts shown as images",
        (
            "A clock melting over the edge of a table in a desert, surreal style",
            "Swirling ribbons of blue and gold paint forming a spiral",
            "A staircase leading up into the clouds with doors floating in the sky",
            "A light bulb containing a tiny green forest",
            "Geometric cubes in pastel colors balanced on top of each other",
        ),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)
_BY_NAME = {c.name: c for c in _CATEGORIES}

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


def category(name: str) -> Category:
    return _BY_NAME[name]


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

    def filter(self, texts: Sequence[str], ids: Sequence[str]) -> list[str | None]:
        """For each text: None if kept, else the reason it was dropped."""
        verdicts: list[str | None] = []
        vectors = self.embed(list(texts)) if texts else None
        for i, (text, pid) in enumerate(zip(texts, ids)):
            key = normalise(text)
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
    cfg: dict, client: LLMClient, embed: Embedder, *, progress: Callable[[int], object] | None = None
) -> tuple[list[dict], dict]:
    """Run the prompt-writing stage. `cfg` is the validated top-level config.

    Returns (records, summary). Records are ordered by category, then by the order the
    model wrote them.
    """
    pcfg = cfg["prompts"]
    cats = [category(name) for name in (pcfg.get("categories") or CATEGORIES)]
    target, per_request = pcfg["per_category"], pcfg["descriptions_per_request"]
    max_batches = pcfg.get("max_requests_per_category") or 3 * math.ceil(target / per_request)
    threshold = pcfg["dedup"]["threshold"]

    kept: dict[str, list[dict]] = {c.slug: [] for c in cats}
    batches = {c.slug: 0 for c in cats}
    filters = {c.slug: NearDuplicateFilter(embed, threshold) for c in cats}
    counts = {c.slug: {"received": 0, "exact_duplicates": 0, "near_duplicates": 0, "surplus": 0} for c in cats}
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
            return ask_json(client, build_request(cat, batch, per_request, cfg["seed"]), parse_descriptions)

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
                    counts[cat.slug]["exact_duplicates" if verdict.startswith("exact") else "near_duplicates"] += 1
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
        "dedup": {"threshold": threshold, "embedder": pcfg["dedup"]["embedder"]},
        "llm": {"model": client.settings.model, "provider": client.settings.provider, **client.stats.as_dict()},
    }
    return records, summary


def write_prompts(cfg: dict, out_path, summary_path) -> dict:
    """Rule prompts_generate: run the stage with the configured LLM and embedder, write the
    prompts (JSONL) and the summary (JSON) atomically. Returns the summary.

    Fails (YieldTooLow, nothing written) when the stage produced no prompt, or fewer than
    prompts.llm.min_yield of the target (per_category x categories), naming the causes.
    Every API key the config names is masked in what is written."""
    from tqdm import tqdm

    from agfsync.io import write_json, write_jsonl
    from agfsync.llm import LLMClient, LLMSettings, check_yield, redact_obj, secret_values
    from agfsync.text_embed import clip_text_embedder, ngram_embed

    pcfg = cfg["prompts"]
    settings = LLMSettings.from_config(pcfg["llm"])
    client = LLMClient(settings, stage="prompts", cache_path=f"{cfg['llm_cache_dir']}/prompts.jsonl",
                       secrets=secret_values(cfg))
    if pcfg["dedup"]["embedder"] == "clip":
        embed = clip_text_embedder(cfg["scores"]["clip"]["model"])
    else:
        embed = ngram_embed
    with tqdm(desc="prompts: LLM requests", unit="req", mininterval=2.0) as bar:
        records, summary = generate_prompts(cfg, client, embed, progress=bar.update)
    client.log_summary()
    asked = summary["target_per_category"] * len(summary["per_category"])
    check_yield("prompts", produced=len(records), asked=asked, unit="prompts", tally=summary["failures"],
                requests="requests", min_yield=settings.min_yield)
    records, summary = redact_obj(records), redact_obj(summary)
    write_jsonl(out_path, records)
    write_json(summary_path, summary)
    log.info("prompts: wrote %d prompts to %s", len(records), out_path)
    return summary
