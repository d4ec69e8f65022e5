"""Controls of the learning signal (`pytest -k control` selects them all): in the miniature
world AGFSync must move gold alignment the right way, the same run with winner and loser
swapped must not, and a run with the learning signal broken must fail the positive test.

Two sizes. The quick controls (the default suite, `make test`) run config/control_quick.yaml,
the demo's experiment at 10 DDIM steps, then rerun it with winner and loser swapped: the
swapped run must lower gold (measured with the demo's weights, 2026-11-30: -7.0 points, 95% CI
-10.6 to -3.4), AGFSync's model must beat the swapped run's on the same held-out prompts and
seeds (+10.7, CI +6.8 to +14.5), and must raise gold on average (+3.7, CI +0.3 to +7.1: the CI
is above 0 here, too narrowly to be a test on other CPUs). They catch a learning signal that
points the wrong way or nowhere (winner and loser swapped, a score column shifted, pairs
chosen at random) and the mismatched-embedding breakage below, measured at this size with the
paper's weights: with every pair trained on the next pair's prompt, AGFSync's run gives -2.3
(CI -5.6 to +0.9), the swapped one -3.2 (CI -6.5 to +0.1), and AGFSync beats the swapped run
by only +1.0 (CI -2.6 to +4.5): all three quick tests fail. About 10 minutes on 2 cores (7 for
the first run, 4 for the rerun; 2026-11-30, AMD EPYC).

The full controls (`make test-all`, marked slow) run config/control.yaml, the size at which the
gain itself is measurable (the world writer's 1,200 prompts, 8 candidates each, the three
judges, best vs worst, 600 Diffusion-DPO steps, the 600 held-out prompts of
data/world/benchmark/control), then rerun it with one change each; each rerun redoes only
what the change touches (the pairs, the training cache, the training and the fine-tuned
model's evaluation). Gold is the world's oracle; every difference is the paired bootstrap 95%
CI of results/world/gold.json (10,000 resamples over prompts, seed 0).

Measured with the demo's weights (VQA 0.60, CLIP 0.30, aesthetic 0.10) on 2 cores, 2026-11-30
(an AMD EPYC about 40% slower than the machine of the earlier runs, and shared with other
work for part of the first run): the positive run 51 minutes, the swapped rerun 6, the broken
one 5. Gold: AGFSync +3.9 points (95% CI +1.4 to +6.4), swapped -7.2 (CI -9.7 to -4.7), the
mismatched embeddings -0.3 (CI -2.6 to +1.9): all three tests pass (docs/world.md, "Ninth
round"; with the paper's weights: +2.8, CI +0.5 to +5.1, "Sixth round").

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

from agfsync.core.io import read_jsonl
from agfsync.core.stats import paired_delta

CONTROL = "config/control.yaml"
QUICK = "config/control_quick.yaml"
GOLD = "results/world/gold.json"
PAIRS = "results/world/pairs.jsonl"
TUNED_SCORES = "results/world/eval/agfsync/tifa"  # the fine-tuned model's per-prompt rows (gold included)
TIMEOUT = 2700  # one Snakemake run; the full positive one takes ~24 minutes on 2 cores



def full_size(test):
    """The full controls: minutes each, in `make test-all` only."""
    return pytest.mark.slow(pytest.mark.timeout(3 * TIMEOUT)(test))

quick = pytest.mark.timeout(TIMEOUT)  # ~6.5 minutes on 2 cores, both runs


def _run(cwd: Path, target: str = GOLD, extra: str | None = None, base: str = CONTROL) -> dict | None:
    """Snakemake on `base` (config/control.yaml), or on `extra` (YAML) extending it."""
    config = base
    if extra is not None:
        (cwd / "config" / "control_variant.yaml").write_text(f"extends: {base}\n{extra}")
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


@full_size
def test_control_agfsync_raises_gold_accuracy(positive):
    diff = positive["difference"]
    assert diff["resamples"] == 10000 and diff["n"] == 600
    assert _gold_rises(positive), diff


@full_size
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


@full_size
def test_control_breakage_mismatched_embeddings_fails_the_positive_test(control_dir, positive):
    _run(control_dir, target=PAIRS)  # the unswapped pairs back (the swapped control may have run)
    _mismatch_embeddings(control_dir)
    gold = _run(control_dir)
    assert not _gold_rises(gold), gold["difference"]


# ------------------------------------------------------------------------- the quick controls


def _tuned_gold(cwd: Path) -> dict[str, float]:
    """The fine-tuned model's gold accuracy per held-out prompt (its evaluation shards' rows)."""
    rows = [r for path in sorted((cwd / TUNED_SCORES).glob("scores-*.jsonl")) for r in read_jsonl(path)]
    assert rows, f"no evaluation rows under {cwd / TUNED_SCORES}"
    return {r["prompt_id"]: float(r["gold"]) for r in rows}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict:
    """config/control_quick.yaml, then the same run with winner and loser swapped: each run's
    gold.json and its fine-tuned model's gold per prompt."""
    cwd = workdir(tmp_path_factory.mktemp("control_quick"))
    runs = {}
    for name, extra in (("agfsync", None), ("swapped", "pairs:\n  swap: true\n")):
        gold = _run(cwd, extra=extra, base=QUICK)
        swapped = json.loads((cwd / "results/world/pairs_summary.json").read_text())["swapped"]
        assert swapped is (name == "swapped")
        runs[name] = {"gold": gold, "tuned": _tuned_gold(cwd)}
    return runs


@quick
def test_control_quick_swapped_pairs_lower_gold_accuracy(quick_runs):
    diff = quick_runs["swapped"]["gold"]["difference"]
    assert diff["resamples"] == 10000 and diff["n"] == 300
    assert diff["ci_high"] < 0, diff  # measured: -7.8 points (CI -11.8 to -3.8)


@quick
def test_control_quick_agfsync_beats_its_swapped_run_on_the_same_prompts(quick_runs):
    ours, swapped = quick_runs["agfsync"]["tuned"], quick_runs["swapped"]["tuned"]
    assert sorted(ours) == sorted(swapped) and len(ours) == 300
    ids = sorted(ours)
    delta = paired_delta([swapped[i] for i in ids], [ours[i] for i in ids])
    assert delta.ci_low > 0, delta.as_dict()  # measured: +9.3 points (CI +4.7 to +13.7)


@quick
def test_control_quick_agfsync_raises_gold_accuracy_on_average(quick_runs):
    diff = quick_runs["agfsync"]["gold"]["difference"]
    assert diff["value"] > 0 and diff["ci_high"] > 0, diff  # measured: +3.7 points (CI +0.3 to +7.1)
