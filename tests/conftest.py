"""Shared fixtures. Nothing here touches the network: models are built locally, LLM
endpoints are tests/fake_openai.py on 127.0.0.1."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-test-7f3a9c2e51b84d6e9a0fSECRET"  # what a leak test greps for

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The Triton kernels run on the CPU through Triton's interpreter (tests/test_kernels.py). triton.jit
# reads this when a kernel module is imported, so it must be set before any test imports one. On a
# CPU it changes nothing else: train.kernels 'auto' still picks torch there.
os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def demo_config() -> dict:
    from agfsync.core.config import load_config

    return copy.deepcopy(load_config(REPO / "config" / "tiny.yaml"))


@pytest.fixture(scope="module")
def demo_config_module() -> dict:
    from agfsync.core.config import load_config

    return copy.deepcopy(load_config(REPO / "config" / "tiny.yaml"))


def live_llm(base_url: str, **overrides) -> dict:
    """An llm config section for the fake server: fast backoff so retries take milliseconds."""
    section = {
        "provider": "openai", "base_url": base_url, "model": "fake-model", "api_key_env": "AGFSYNC_TEST_KEY",
        "temperature": 0.9, "top_p": 0.7, "max_tokens": 512, "send_seed": True, "timeout_s": 2.0,
        "max_retries": 3, "backoff_s": 0.01, "max_backoff_s": 0.05, "concurrency": 4, "max_requests": 1000,
        "repair_attempts": 2, "responses": None,
    }
    section.update(overrides)
    return section


@pytest.fixture
def api_key(monkeypatch) -> str:
    monkeypatch.setenv("AGFSYNC_TEST_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    from agfsync.demo.tiny_models import build_all

    out = tmp_path_factory.mktemp("tiny") / "tiny_models"
    build_all(out)
    return out


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The demo workflow run once, locally, in a scratch copy of the repository: checked in
    test_workflow.py, and the reference test_slurm.py compares a run through SLURM with."""
    from workflow_helpers import DEMO, snakemake, workdir

    cwd = workdir(tmp_path_factory.mktemp("demo"))
    result = snakemake(cwd, *DEMO, timeout=1800)  # ~7 min on 2 cores
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


DEMO_RUN_TIMEOUT_S = 3000


def pytest_collection_modifyitems(config, items):
    """A test that needs the session's demo run may be the one whose setup runs it (~9 minutes
    on 2 idle cores, far more on a loaded machine): whichever test that is, its time limit must
    cover the demo, so every user of the fixture gets at least DEMO_RUN_TIMEOUT_S."""
    for item in items:
        if "demo_run" not in getattr(item, "fixturenames", ()):
            continue
        marker = item.get_closest_marker("timeout")
        if marker is None or (marker.args and marker.args[0] < DEMO_RUN_TIMEOUT_S):
            item.add_marker(pytest.mark.timeout(DEMO_RUN_TIMEOUT_S), append=False)  # the closest one counts
