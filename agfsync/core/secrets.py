"""Secret values (API keys) and their masking, for everything the LLM stages write (pure, no torch).

One process-wide registry: `register_secrets` adds values (the LLM client adds its key,
agfsync.core.logs.job_logging every key the full config names), `redact`/`redact_obj` mask them
in text and JSON-like objects, and `RedactFilter` masks log records of the LLM modules and
the HTTP stack, whatever handler writes them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("agfsync.llm.client")

REDACTED = "***"
MIN_SECRET_LEN = 8  # shorter values are refused: masking them would rewrite ordinary text
_secrets: tuple[str, ...] = ()
_secrets_lock = threading.Lock()


def secret_values(cfg: dict) -> list[str]:
    """The values of every API key the config names (each LLM section's api_key_env:
    prompts.llm, qa.llm, eval.judge.llm, eval.vqascore.llm), read from the environment; unset ones left out."""
    from agfsync.core.config import llm_sections

    names = [llm.get("api_key_env") for _, llm in llm_sections(cfg)]
    return [os.environ[name] for name in names if name and os.environ.get(name)]


def register_secrets(values: Iterable[str | None]) -> None:
    """Add values to the process-wide set that `redact` masks. Empty values are ignored;
    values shorter than MIN_SECRET_LEN are refused with a warning (not naming them)."""
    global _secrets
    with _secrets_lock:
        found = set(_secrets)
        for value in values:
            value = (value or "").strip()
            if not value or value in found:
                continue
            if len(value) < MIN_SECRET_LEN:
                log.warning("an API key of fewer than %d characters cannot be masked in outputs and logs; "
                            "use a real key", MIN_SECRET_LEN)
                continue
            found.add(value)
        _secrets = tuple(sorted(found, key=len, reverse=True))  # longest first: no partial masks


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_obj(obj: Any) -> Any:
    """A copy of a JSON-like object (dicts, lists, strings) with every secret masked, keys included."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(key): redact_obj(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(value) for value in obj)
    return obj


class RedactFilter(logging.Filter):
    """Masks secrets in every record of the logger it is attached to (message, arguments
    and traceback), whatever handler or formatter later writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


# Filters run only for records logged to their own logger: attach one to each LLM module's logger and to
# the HTTP stack's, whatever the handlers (the CLI's RedactingFormatter masks the root handlers too).
for _name in ("agfsync.llm.client", "agfsync.stages.prompts", "agfsync.stages.qa", "agfsync.stages.judge",
              "openai", "httpx", "httpx2", "httpcore", "httpcore2"):
    logging.getLogger(_name).addFilter(RedactFilter())
