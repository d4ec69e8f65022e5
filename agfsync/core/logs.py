"""Logging for rule scripts and the CLI (pure, no torch).

`job_logging(path)` sends the root logger to the rule's log file and to stderr, logs an
uncaught exception with its traceback before re-raising it, and formats with a
formatter that masks the value of every secret environment variable named by the config (API keys), so
that even a library message echoing a key cannot write it to a log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Masks secret values anywhere in the formatted record, tracebacks included."""

    def __init__(self, fmt: str, env_names: Iterable[str]):
        super().__init__(fmt)
        self.secrets = [v for name in env_names if name and len(v := os.environ.get(name, "")) >= 6]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def secret_env_names(cfg: dict) -> list[str]:
    """The environment variables holding every API key the config names. Pass the FULL
    config (a rule's params hold one stage's section only), so a job masks every stage's key."""
    from agfsync.core.config import llm_sections

    return [llm["api_key_env"] for _, llm in llm_sections(cfg) if llm.get("api_key_env")]


@contextlib.contextmanager
def job_logging(path: str | os.PathLike | None, secret_envs: Iterable[str] = (), level: int = logging.INFO) -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(path, mode="w", encoding="utf-8"))
    secret_envs = list(secret_envs)
    # The same values are masked wherever the LLM layer writes (outputs, caches, errors): one
    # registry for the whole job, whichever stage's key an endpoint echoes.
    from agfsync.core.secrets import register_secrets

    register_secrets(os.environ.get(name) for name in secret_envs)
    for handler in handlers:
        handler.setFormatter(RedactingFormatter(FORMAT, secret_envs))
        root.addHandler(handler)
    old_level = root.level
    root.setLevel(level)
    try:
        yield root
    except BaseException:
        root.exception("job failed")
        raise
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(old_level)
