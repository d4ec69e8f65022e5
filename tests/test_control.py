"""Controls of the learning signal (`pytest -k control` selects them all): in the miniature
world AGFSync must raise gold alignment, the same run with winner and loser swapped must
not, and a run with the learning signal broken must fail the positive test.

One scratch copy of the repository runs config/control.yaml through Snakemake (the demo's
experiment at the size where its effect is measurable: the world writer's 1,200 prompts, 8
candidates each, the three judges, best vs worst, 600 Diffusion-DPO steps, the 600 held-out
prompts of data/world/benchmark/control), then reruns it with one change; each rerun redoes
only what the change touches (the pairs, the training cache, the training and the fine-tuned
model's evaluation). Gold is the world's oracle; every difference is the paired bootstrap 95%
CI of results/world/gold.json (10,000 resamples over prompts, seed 0).

Measured on 2 cores (2026-11-29, a fresh-clone CI run): the positive run 24 minutes, the swapped
rerun 5.5, the broken one 6.
Gold: AGFSync +2.8 points (95% CI +0.5 to +5.1) with the BLIP-2 that looks at the image
(2026-11-30; the blind one's run gained +4.4, CI +2.2 to +6.7); swapped and broken runs in
docs/world.md, "Fourth round" and "Sixth round".

The breakage goes through the real code, not a patched copy of it: results/world/pairs.jsonl
rewritten with every pair's prompt text moved to the next pair, so the training cache (which
encodes the text it finds there) trains each pair's latents with another prompt's embedding.
The DPO loss with its sign flipped is, term by term, the swapped pairs' loss
(tests/test_dpo_loss.py::test_control_sign_flipped_loss_is_the_swapped_pairs_loss), so the
swapped control is that breakage's test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflow_helpers import snakemake, workdir

CONTROL = "config/control.yaml"
GOLD = "results/world/gold.json"
PAIRS = "results/world/pairs.jsonl"
TIMEOUT = 2700  # one Snakemake run; the positive one takes ~24 minutes on 2 cores

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3 * TIMEOUT)]


def _run(cwd: Path, target: str = GOLD, extra: str | None = None) -> dict | None:
    """Snakemake on config/control.yaml, or on `extra` (YAML) extending it."""
    config = CONTROL
    if extra is not None:
        (cwd / "config" / "control_variant.yaml").write_text(f"extends: {CONTROL}\n{extra}")
        config = "config/control_variant.yaml"
    # the target first: --configfile takes every path after it
    result = snakemake(cwd, target, "--configfile", config, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((cwd / GOLD).read_text()) if target == GOLD else None


def _gold_rises(gold: dict) -> bool:
    """The positive test's criterion: the lower end of the gold difference's CI is above 0."""
    return gold["difference"]["ci_low"] > 0


@pytest.fixture(scope="module")
def control_dir(tmp_path_factory) -> Path:
    return workdir(tmp_path_factory.mktemp("control"))


@pytest.fixture(scope="module")
def positive(control_dir) -> dict:
    return _run(control_dir)


def test_control_agfsync_raises_gold_accuracy(positive):
    diff = positive["difference"]
    assert diff["resamples"] == 10000 and diff["n"] == 600
    assert _gold_rises(positive), diff


def test_control_swapped_pairs_do_not_raise_gold_accuracy(control_dir, positive):
    gold = _run(control_dir, extra="pairs:\n  swap: true\n")
    assert json.loads((control_dir / "results/world/pairs_summary.json").read_text())["swapped"] is True
    diff = gold["difference"]
    assert diff["value"] <= 0 or diff["ci_high"] < 0.02, diff


def _mismatch_embeddings(cwd: Path) -> None:
    """Every pair keeps its winner's and loser's latents but gets the next pair's prompt."""
    path = cwd / PAIRS
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    prompts = [p["prompt"] for p in pairs]
    assert len(set(prompts)) > 1
    for pair, prompt in zip(pairs, prompts[1:] + prompts[:1]):
        pair["prompt"] = prompt
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))


def test_control_breakage_mismatched_embeddings_fails_the_positive_test(control_dir, positive):
    _run(control_dir, target=PAIRS)  # the unswapped pairs back (the swapped control may have run)
    _mismatch_embeddings(control_dir)
    gold = _run(control_dir)
    assert not _gold_rises(gold), gold["difference"]
