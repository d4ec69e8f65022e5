"""The world's held-out benchmark (agfsync.world.benchmark), the web-caption noise of the
base model's training captions (scenes.mislabel), and held-out prompts staying held out
(prompts.exclude_eval_prompts). Pure: no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agfsync.world import benchmark, captions, questions, scenes
from agfsync.world.grammar import CATEGORIES, COLORS, HELD_OUT_PAIRS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "data" / "world" / "benchmark" / "tifa"


CONTROL = REPO / "data" / "world" / "benchmark" / "control"


@pytest.mark.parametrize("shipped, kwargs", [(SHIPPED, {}), (CONTROL, {"n": 600, "stream": "control"})],
                         ids=["demo", "control"])
def test_the_shipped_benchmarks_are_reproduced_byte_for_byte(tmp_path, shipped, kwargs):
    written = benchmark.write(tmp_path, **kwargs)
    assert [p.name for p in written] == list(benchmark.FILES)
    for path in written:
        assert path.read_bytes() == (shipped / path.name).read_bytes(), path.name


def test_benchmark_format_and_counts():
    inputs = json.loads((SHIPPED / benchmark.FILES[0]).read_text())
    rows = json.loads((SHIPPED / benchmark.FILES[1]).read_text())
    assert len(inputs) == 300
    assert inputs[0] == {"id": "single-object_00000", "caption": inputs[0]["caption"], "category": "single_object",
                         "split": "seen"}
    assert {r["id"].split("_")[0] for r in inputs} == {c.replace("_", "-") for c in CATEGORIES}
    assert {r["split"] for r in inputs} == {"seen"}  # the training distribution: the headline's prompts
    assert len(rows) == 1576  # the oracle's questions, 5.3 per prompt
    assert {r["element_type"] for r in rows} == set(benchmark.ELEMENT_TYPES)
    assert {r["id"] for r in rows} == {r["id"] for r in inputs}


def test_benchmark_splits_name_held_out_pairs_and_are_not_the_category():
    records = benchmark.prompts(1, 120, "benchmark", "both")
    counts = {}
    for r in records:
        counts[r["category"], r["split"]] = counts.get((r["category"], r["split"]), 0) + 1
    assert counts == {(c, split): 10 for c in CATEGORIES for split in ("seen", "unseen")}
    # every unseen prompt names a held-out color-shape pair; no seen one does
    for split in ("both", "seen", "unseen"):
        for record in benchmark.prompts(1, 60, "benchmark", split):
            pairs = captions.parse(record["prompt"]).pairs()
            assert bool(pairs & HELD_OUT_PAIRS) == (record["split"] == "unseen"), record
            assert split == "both" or record["split"] == split
    with pytest.raises(ValueError, match="benchmark split 'train': expected one of seen, unseen, both"):
        benchmark.prompts(1, 1, "benchmark", "train")


def test_benchmark_answers_are_the_scene_graphs_truth():
    for record in benchmark.prompts(1, 30, "benchmark"):
        for qa in record["qa"]:
            assert questions.truth(record["scene"], qa) == qa["answer"]


def test_mislabel_changes_exactly_one_fact_and_never_makes_a_held_out_pair():
    changed = {"color": 0, "shape": 0, "count": 0, "size": 0, "position": 0, "relation": 0}
    for i in range(3000):
        rng = scenes.rng_for(0, "test-mislabel", i)
        description, _ = scenes.sample_scene(rng, CATEGORIES[i % len(CATEGORIES)], "seen")
        wrong = scenes.mislabel(description, rng)
        assert not wrong.pairs() & HELD_OUT_PAIRS
        assert wrong.category == description.category
        diffs = [(field, a, b) for m, n in zip(description.mentions, wrong.mentions)
                 for field, a, b in ((f, getattr(m, f), getattr(n, f)) for f in ("color", "shape", "count", "size",
                                                                                   "position")) if a != b]
        diffs += [("relation", a, b) for a, b in zip(description.relations, wrong.relations) if a != b]
        assert len(diffs) == 1, (description, wrong)
        field, before, after = diffs[0]
        changed[field] += 1
        if field == "color":
            assert after == scenes.CONFUSED_COLOR[before]
        if field in ("size", "relation"):
            assert after == (scenes.OPPOSITE[before] if field == "size" else (before[0], scenes.OPPOSITE[before[1]],
                                                                               before[2]))
        if field == "count":
            assert {before, after} == {2, 3}
    assert all(changed.values()), changed  # every kind of fact is mislabelled somewhere


def test_confused_colors_are_neighbours_in_a_cycle_of_pairs():
    assert scenes.CONFUSED_COLOR == {"red": "orange", "orange": "red", "yellow": "orange", "green": "blue",
                                     "blue": "purple", "purple": "blue"}
    assert set(scenes.CONFUSED_COLOR) == set(COLORS)


@pytest.mark.parametrize("exclude, kept", [(False, 4), (True, 3)])
def test_a_written_prompt_equal_to_an_evaluation_prompt_is_dropped(exclude, kept):
    from agfsync.models.text_embed import ngram_embed
    from agfsync.stages.prompts import NearDuplicateFilter

    dedup = NearDuplicateFilter(ngram_embed, 1.0)
    if exclude:
        dedup.reserve(["A photo of a Red circle."], "colors_00007")
    verdicts = dedup.filter(["a photo of a red circle", "two blue squares", "a green triangle", "a red square"],
                            ["a", "b", "c", "d"])
    assert sum(v is None for v in verdicts) == kept
    if exclude:
        assert verdicts[0] == "evaluation prompt colors_00007"
