"""Stage 1b, rule qa_generate: TIFA-style question/answer pairs for each prompt.

Pure logic (no torch). Each record is {question, choices, answer, element, element_type}
as in TIFA v1.0 (docs/method.md, Question/answer pairs). Two modes:
  yes_no           the paper's code: only yes/no questions, choices ["yes", "no"];
  multiple_choice  TIFA: yes/no existence questions plus multiple-choice questions
                   ("what color is the car?" with 2-4 choices).
Every record is validated (answer among choices, known element_type, non-empty
question, unique question); a prompt with fewer than `min_pairs` valid pairs after the
repair attempts is dropped, and the summary says how many and why.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from agfsync.llm.answers import BadOutput, ask_json, extract_json, run_concurrently, tally_failures
from agfsync.llm.base import Reply, Request
from agfsync.llm.client import LLMClient
from agfsync.core.seeds import derive_seed

if TYPE_CHECKING:
    from agfsync.core.sections import QASettings, Settings

log = logging.getLogger(__name__)

ELEMENT_TYPES = (
    "object", "human", "animal", "food", "activity", "attribute", "counting",
    "color", "material", "spatial", "location", "shape", "size", "other",
)
MODES = ("yes_no", "multiple_choice")
TOO_FEW = "too few valid question/answer pairs"

EXAMPLE_CAPTION = "A red double-decker bus parked beside two black taxis on a rainy street"
EXAMPLES = {
    "yes_no": [
        {"element": "bus", "element_type": "object", "question": "Is there a bus?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "double-decker", "element_type": "attribute", "question": "Is the bus a double-decker?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "red", "element_type": "color", "question": "Is the bus red?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "taxi", "element_type": "object", "question": "Are there taxis?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "two", "element_type": "counting", "question": "Are there two taxis?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "black", "element_type": "color", "question": "Are the taxis black?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "beside", "element_type": "spatial", "question": "Is the bus beside the taxis?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "rainy", "element_type": "attribute", "question": "Is it raining?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "street", "element_type": "location", "question": "Is this on a street?", "choices": ["yes", "no"], "answer": "yes"},
    ],
    "multiple_choice": [
        {"element": "bus", "element_type": "object", "question": "Is there a bus?", "choices": ["yes", "no"], "answer": "yes"},
        {"element": "red", "element_type": "color", "question": "What color is the bus?", "choices": ["red", "blue", "green", "yellow"], "answer": "red"},
        {"element": "double-decker", "element_type": "attribute", "question": "What type of bus is it?", "choices": ["double-decker", "minibus", "school bus"], "answer": "double-decker"},
        {"element": "two", "element_type": "counting", "question": "How many taxis are there?", "choices": ["1", "2", "3", "4"], "answer": "2"},
        {"element": "black", "element_type": "color", "question": "What color are the taxis?", "choices": ["black", "white", "yellow"], "answer": "black"},
        {"element": "beside", "element_type": "spatial", "question": "Where is the bus relative to the taxis?", "choices": ["beside them", "behind them", "on top of them"], "answer": "beside them"},
        {"element": "rainy", "element_type": "attribute", "question": "What is the weather like?", "choices": ["rainy", "sunny", "snowy"], "answer": "rainy"},
    ],
}

_MODE_RULES = {
    "yes_no": (
        "Every question must be a yes/no question with choices [\"yes\", \"no\"] whose answer is \"yes\" "
        "for an image that matches the description exactly."
    ),
    "multiple_choice": (
        "For each element ask first whether it is present (choices [\"yes\", \"no\"], answer \"yes\"), then, "
        "where the description gives details (color, count, material, shape, position, activity), a "
        "multiple-choice question with 2 to 4 plausible choices of which exactly one matches the description."
    ),
}


def system_message(mode: str) -> str:
    return (
        "You write visual question/answer pairs that check whether an image matches its description, "
        "in the style of the TIFA benchmark.\n"
        "Split the description into its visual elements (objects, people, animals, food, activities, "
        "attributes, counts, colors, materials, spatial relations, locations, shapes) and ask about each one. "
        "Ask only what can be answered by looking at the image; never ask about things the description does "
        "not state.\n"
        f"{_MODE_RULES[mode]}\n"
        f"element_type is one of: {', '.join(ELEMENT_TYPES)}.\n"
        'Answer with a JSON object and nothing else: {"qa": [{"element": ..., "element_type": ..., '
        '"question": ..., "choices": [...], "answer": ...}, ...]}'
    )


def build_request(record: dict, mode: str, seed: int) -> Request:
    example = json.dumps({"qa": EXAMPLES[mode]}, ensure_ascii=False)
    return Request(
        key=f"qa/{record['id']}",
        messages=(
            {"role": "system", "content": system_message(mode)},
            {"role": "user", "content": f"Description: {EXAMPLE_CAPTION}"},
            {"role": "assistant", "content": example},
            {"role": "user", "content": f"Description: {record['prompt']}"},
        ),
        seed=derive_seed(seed, "qa", record["id"], bits=31),
    )


def _clean(value) -> str | None:
    return " ".join(value.split()) if isinstance(value, str) and value.strip() else None


def validate_pair(item, mode: str) -> tuple[dict | None, str | None]:
    """A normalised record, or the reason it is invalid."""
    if not isinstance(item, dict):
        return None, f"not an object ({type(item).__name__})"
    question = _clean(item.get("question"))
    if question is None:
        return None, "empty or missing question"
    element = _clean(item.get("element"))
    if element is None:
        return None, "empty or missing element"
    element_type = _clean(item.get("element_type"))
    element_type = element_type.lower() if element_type else None
    if element_type not in ELEMENT_TYPES:
        return None, f"unknown element_type {item.get('element_type')!r}"
    choices = item.get("choices")
    if not isinstance(choices, list) or not all(_clean(c) for c in choices):
        return None, "choices must be a list of non-empty strings"
    choices = [_clean(c) for c in choices]
    lowered = [c.lower() for c in choices]
    if len(choices) < 2 or len(set(lowered)) != len(lowered):
        return None, "need at least 2 distinct choices"
    answer = _clean(item.get("answer"))
    if answer is None or answer.lower() not in lowered:
        return None, "answer is not among the choices"
    answer = choices[lowered.index(answer.lower())]
    if mode == "yes_no":
        if sorted(lowered) != ["no", "yes"]:
            return None, "yes_no mode needs choices [yes, no]"
        choices, answer = ["yes", "no"], answer.lower()
    return {"question": question, "choices": choices, "answer": answer, "element": element, "element_type": element_type}, None


def make_parser(prompt_id: str, mode: str, min_pairs: int, max_pairs: int, invalid: Counter) -> Callable[[Reply], list[dict]]:
    def parse(reply: Reply) -> list[dict]:
        obj = extract_json(reply)
        items = obj.get("qa")
        if not isinstance(items, list):
            found = ", ".join(map(repr, obj)) or "nothing"
            raise BadOutput(f"expected a list in field 'qa' (the object has: {found})")
        pairs, seen, problems = [], set(), Counter()
        for item in items:
            pair, reason = validate_pair(item, mode)
            if pair is not None and pair["question"].lower() in seen:
                pair, reason = None, "duplicate question"
            if pair is None:
                problems[reason] += 1
                continue
            seen.add(pair["question"].lower())
            pairs.append(pair)
        invalid.update(problems)
        if len(pairs) < min_pairs:
            detail = "; ".join(f"{n} x {r}" for r, n in problems.most_common(3))
            raise BadOutput(f"{TOO_FEW}: {len(pairs)} of the {min_pairs} needed" + (f" ({detail})" if detail else ""))
        return [{"question_id": f"{prompt_id}-q{i:02d}", **p} for i, p in enumerate(pairs[:max_pairs])]

    return parse


def generate_qa(
    qa: QASettings, client: LLMClient, prompts: list[dict], *, seed: int,
    progress: Callable[[int], object] | None = None,
) -> tuple[list[dict], dict]:
    """Run the QA stage over prompt records with the settings of `qa`; request seeds derive
    from `seed`. Returns (kept records with "qa", summary)."""
    mode, min_pairs, max_pairs = qa.mode, qa.min_pairs, qa.max_pairs
    invalid: Counter = Counter()
    per_item_invalid = [Counter() for _ in prompts]  # one per item (threads), merged in input order

    def ask(indexed):
        i, record = indexed
        parser = make_parser(record["id"], mode, min_pairs, max_pairs, per_item_invalid[i])
        return ask_json(client, build_request(record, mode, seed), parser)

    kept, dropped, skipped, seen = [], [], [], []
    element_types: Counter = Counter()
    repaired = 0
    outcomes = run_concurrently(ask, list(enumerate(prompts)), client.settings.concurrency)
    for (i, record), outcome in zip(enumerate(prompts), outcomes):
        if progress:
            progress(1)
        seen.append(outcome)
        invalid.update(per_item_invalid[i])
        if outcome.ok:
            repaired += outcome.attempts > 1
            kept.append({"id": record["id"], "category": record.get("category"), "prompt": record["prompt"], "qa": outcome.value})
            element_types.update(p["element_type"] for p in outcome.value)
            continue
        entry = {"id": record["id"], "reasons": outcome.reasons}
        if outcome.reasons and outcome.reasons[-1].startswith(TOO_FEW):
            dropped.append(entry)
        else:
            skipped.append({**entry, "outage": outcome.outage})
        log.warning("qa: %s %s: %s", "dropped" if entry in dropped else "skipped", record["id"], "; ".join(outcome.reasons))

    num_pairs = sum(len(r["qa"]) for r in kept)
    summary = {
        "mode": mode,
        "num_prompts_in": len(prompts),
        "num_prompts_kept": len(kept),
        "num_pairs": num_pairs,
        "mean_pairs_per_prompt": round(num_pairs / len(kept), 2) if kept else 0.0,
        "num_repaired": repaired,
        "dropped_too_few_pairs": {"count": len(dropped), "min_pairs": min_pairs, "items": dropped},
        "skipped_bad_output": {"count": len(skipped), "items": skipped},
        "failures": tally_failures(seen),
        "invalid_pairs": dict(invalid.most_common()),
        "element_types": dict(element_types.most_common()),
        "llm": {"model": client.settings.model, "provider": client.settings.provider, **client.stats.as_dict()},
    }
    return kept, summary


def run(settings: Settings, inputs: Mapping, outputs: Mapping, **wildcards) -> dict:
    """Rule qa_generate (`agfsync qa`): QA pairs for the prompts in inputs["prompts"]; the kept
    prompts with their pairs into outputs["qa"], the summary into outputs["summary"]."""
    return write_qa(settings, inputs["prompts"], outputs["qa"], outputs["summary"])


def write_qa(settings: Settings, prompts_path, out_path, summary_path) -> dict:
    """QA pairs, from the LLM of qa.llm, for every prompt in `prompts_path`; writes the kept
    prompts with their pairs (JSONL) and the summary (JSON) atomically.

    Fails (YieldTooLow, nothing written) when no prompt was kept, or fewer than
    qa.llm.min_yield of the prompts in, naming the causes. Every API key the settings name
    is masked in what is written."""
    from tqdm import tqdm

    from agfsync.core.ids import read_records
    from agfsync.core.io import write_json, write_jsonl
    from agfsync.core.secrets import redact_obj, secret_values
    from agfsync.llm.answers import check_yield
    from agfsync.llm.client import LLMClient

    qa = settings.qa
    prompts = read_records(prompts_path, required=("id", "prompt"))  # ids checked: safe names, unique
    client = LLMClient(qa.llm, stage="qa", cache_path=f"{settings.llm_cache_dir}/qa.jsonl",
                       secrets=secret_values(settings.to_dict()))
    with tqdm(total=len(prompts), desc="qa: prompts", unit="prompt", mininterval=2.0) as bar:
        kept, summary = generate_qa(qa, client, prompts, seed=settings.seed, progress=bar.update)
    client.log_summary()
    check_yield("qa", produced=len(kept), asked=len(prompts), unit="prompts", tally=summary["failures"],
                requests="prompts", min_yield=qa.llm.min_yield)
    kept, summary = redact_obj(kept), redact_obj(summary)
    write_jsonl(out_path, kept)
    write_json(summary_path, summary)
    log.info(
        "qa: kept %d of %d prompts (%d pairs); dropped %d with < %d pairs, skipped %d on bad output",
        len(kept), len(prompts), summary["num_pairs"], summary["dropped_too_few_pairs"]["count"],
        qa.min_pairs, summary["skipped_bad_output"]["count"],
    )
    return summary
