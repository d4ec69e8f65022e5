"""The answers of the LLM layer: JSON out of a model's reply, the repair re-asks, the stage's yield.

Used by the prompt and QA stages (rules prompts_generate, qa_generate) and by the judge
(rule eval_judge) on top of agfsync.llm.client.LLMClient:

- `extract_json`: the JSON object in an answer, or BadOutput saying why there is none (not
  JSON, wrong type, empty, truncated, HTML, a refusal); strings in it pass the same decoding
  boundary as the answer's text (agfsync.llm.base.clean_text);
- `ask_json`: send a request, parse the answer, and on bad output re-ask with the parse error
  up to llm.repair_attempts, then give up on that item with the reasons (an Outcome), never
  crashing the stage;
- `tally_failures` and `check_yield`: a stage that produced nothing, or less than
  llm.min_yield of what it asked for, fails (YieldTooLow) naming the causes, outages apart;
- `run_concurrently`: the items of a stage with at most llm.concurrency in flight, in order.

Everything it returns or raises has every registered secret masked (`redact`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from agfsync.core.secrets import redact
from agfsync.llm.base import ItemFailure, LLMError, Reply, Request, _short, clean_text

if TYPE_CHECKING:
    from agfsync.llm.client import LLMClient

T = TypeVar("T")


class BadOutput(ValueError):
    """The model's answer cannot be used; the message is sent back in a repair request."""


class YieldTooLow(LLMError):
    """The stage produced nothing, or less than llm.min_yield of what it asked for."""


# ----------------------------------------------------------------------------- parsing helpers


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_REFUSAL = re.compile(r"^\s*(i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i cannot|as an ai|i am unable|i'm unable)", re.I)


def extract_json(reply: Reply) -> Any:
    """The JSON object in a model answer, or BadOutput saying why there is none."""
    if reply.refusal:
        raise BadOutput(f"refusal: {_short(reply.refusal)}")
    text = (reply.text or "").strip()
    if not text:
        raise BadOutput("empty response")
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1).strip()
    lowered = text[:200].lower()
    if lowered.startswith(("<!doctype", "<html", "<head", "<body")):
        raise BadOutput("an HTML page instead of JSON")
    if _REFUSAL.match(text):
        raise BadOutput(f"refusal: {_short(text, 80)}")
    start = text.find("{")
    if start < 0:
        try:
            kind = type(json.loads(text)).__name__
        except json.JSONDecodeError:
            raise BadOutput(f"not JSON: {_short(text, 60)!r}") from None
        raise BadOutput(f"expected a JSON object, got {kind}")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as err:
        if reply.finish_reason == "length":
            raise BadOutput("truncated JSON (the answer hit max_tokens)") from None
        raise BadOutput(f"invalid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(obj, dict):
        raise BadOutput(f"expected a JSON object, got {type(obj).__name__}")
    # The answer's JSON may itself hold "\ud800" escapes: the same boundary as the text.
    return _clean_json(obj)


def _clean_json(obj: Any) -> Any:
    if isinstance(obj, str):
        return clean_text(obj)[0]
    if isinstance(obj, dict):
        return {_clean_json(key): _clean_json(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_clean_json(value) for value in obj]
    return obj


REPAIR_TEMPLATE = (
    "Your previous answer could not be used: {reason}. "
    "Answer again with only the JSON object in the requested format, and nothing else."
)


@dataclasses.dataclass
class Outcome:
    """Result of one item: `value` when parsed, else `reasons` for the skip.

    For a failed item, `cause` is the short cause of its last failure and `outage` says
    whether it was an outage (not cached; a rerun asks again)."""

    key: str
    value: Any = None
    reasons: list[str] = dataclasses.field(default_factory=list)
    attempts: int = 0
    cause: str | None = None
    outage: bool = False

    @property
    def ok(self) -> bool:
        return self.value is not None


def _bad_output_cause(reason: str) -> str:
    """'refusal: I'm sorry...' -> 'refusal'; 'invalid JSON (Expecting ...)' -> 'invalid JSON'."""
    return re.split(r"[:(]", reason, maxsplit=1)[0].strip() or reason


def ask_json(client: LLMClient, request: Request, parse: Callable[[Reply], T]) -> Outcome:
    """Ask, parse; on BadOutput re-ask with the reason (up to repair_attempts); never raises
    for a bad item. Stage-stopping errors (AuthError, BudgetExceeded) propagate."""
    outcome = Outcome(key=request.key)
    messages = list(request.messages)
    for attempt in range(client.settings.repair_attempts + 1):
        key = request.key if attempt == 0 else f"{request.key}#repair{attempt}"
        outcome.attempts = attempt + 1
        try:
            reply = client.complete(dataclasses.replace(request, key=key, messages=tuple(messages)))
        except ItemFailure as err:
            outcome.reasons.append(str(err))
            outcome.cause, outcome.outage = err.cause, err.outage
            return outcome
        try:
            outcome.value = parse(reply)
            return outcome
        except BadOutput as err:
            reason = redact(str(err))
            outcome.reasons.append(reason)
            outcome.cause, outcome.outage = _bad_output_cause(reason), False
            messages += [
                {"role": "assistant", "content": reply.text or ""},
                {"role": "user", "content": REPAIR_TEMPLATE.format(reason=reason)},
            ]
    return outcome


# ----------------------------------------------------------------------------- stage yield


def tally_failures(outcomes: Iterable[Outcome]) -> dict:
    """Counts of a stage's items: {"items", "failed", "outage": {cause: n}, "other": {cause: n}}."""
    items, outage, other = 0, Counter(), Counter()
    for outcome in outcomes:
        items += 1
        if not outcome.ok:
            (outage if outcome.outage else other)[outcome.cause or "unknown"] += 1
    return {"items": items, "failed": sum(outage.values()) + sum(other.values()),
            "outage": dict(outage.most_common()), "other": dict(other.most_common())}


def _causes(counts: dict, limit: int = 3) -> str:
    shown = [f"{cause} x {n}" for cause, n in list(counts.items())[:limit]]
    if len(counts) > limit:
        shown.append(f"{len(counts) - limit} more cause(s)")
    return ", ".join(shown)


def check_yield(stage: str, *, produced: int, asked: int, unit: str, tally: dict, requests: str,
                min_yield: float, section: str | None = None) -> None:
    """YieldTooLow when a stage produced nothing, or fewer than min_yield x asked `unit`s.

    The message names the shortfall, the config key (`section`.llm.min_yield, section
    defaulting to the stage), and the causes of the failed `requests` (tally_failures),
    outages apart (they are not cached: a rerun asks again)."""
    section = section or stage
    if produced > 0 and produced >= min_yield * asked:
        return
    if produced == 0:
        message = f"{stage}: produced nothing (0 of {asked} {unit})"
    else:
        message = (f"{stage}: produced {produced} of {asked} {unit} ({produced / asked:.0%}), below "
                   f"{section}.llm.min_yield = {min_yield:g}")
    failed, total = tally["failed"], tally["items"]
    if failed:
        message += f"; {failed} of {total} {requests} failed"
        outages, others = sum(tally["outage"].values()), sum(tally["other"].values())
        if outages and not others:
            message += f", every failure was an outage ({_causes(tally['outage'])})"
        elif outages:
            message += f": {outages} outage(s) ({_causes(tally['outage'])}), {others} other(s) ({_causes(tally['other'])})"
        else:
            message += f" ({_causes(tally['other'])})"
        if outages:
            message += "; outage failures are not cached: run the stage again when the endpoint is back"
        if others:
            message += f"; the other failures are listed in the log (set {section}.llm.retry_failed to ask again)"
    elif total == 0:
        message += f"; no {requests} were made"
    raise YieldTooLow(redact(message))


def run_concurrently(fn: Callable[[Any], T], items: Iterable[Any], concurrency: int, progress=None) -> Iterator[T]:
    """Apply fn to items with at most `concurrency` in flight; yield results in input order.
    The first exception stops the remaining work and propagates."""
    items = list(items)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                result = future.result()
                if progress is not None:
                    progress.update(1)
                yield result
        except BaseException:
            for future in futures:
                future.cancel()
            raise
