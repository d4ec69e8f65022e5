"""The report page (agfsync.report): headline sentences and verdicts from the CIs, the
reward-hacking warning, the image grids' choice of prompts, upscaled images, a
self-contained page, and the rule's inputs covering every file the page reads.
Pure and fast: synthetic result files in tmp_path, no torch, no workflow run."""

from __future__ import annotations

import base64
import copy
import io
import json
import re

import numpy as np
import pytest
from helpers import settings
from PIL import Image

from agfsync.core import dag, layout
from agfsync.core.config import load_config
from agfsync.core.io import write_json, write_jsonl
from agfsync.core.pairs import select_pairs
from agfsync.core.shards import encode_png, image_member, write_shard
from agfsync.report import data as report_data
from agfsync.report import grids, page, svg, verdicts
from conftest import REPO

TYPES = ("color", "counting", "shape", "spatial")
# per prompt: AGFSync - base in correct gold answers (of 4 questions)
GOLD_DELTAS = {"w-00": 4, "w-01": 1, "w-02": 3, "w-03": -2, "w-04": 0, "w-05": 2, "w-06": -4, "w-07": 1, "w-08": -1,
               "w-09": 2, "w-10": -3, "w-11": 1, "w-12": -1, "w-13": 1, "w-14": -1, "w-15": -1}
GAINS = ["w-00", "w-02", "w-05", "w-09", "w-01", "w-07"]
LOSSES = ["w-06", "w-10", "w-03", "w-08", "w-12", "w-14"]
WARNING = ("Reward-hacking warning: from step 150 to step 300 the proxy reward rose by +3.00 while gold accuracy "
           "fell by -4.0 points: the model learns what the AI judges reward, not what the prompts ask.")


@pytest.fixture(scope="module")
def world_config() -> dict:
    cfg = load_config(REPO / "config" / "demo.yaml")
    cfg["eval"]["shard_size"] = 100  # three shards per variant: the grids must find images in any of them
    return cfg


def ci(value, low, high, n=300, **extra) -> dict:
    return {"value": value, "ci_low": low, "ci_high": high, "level": 0.95, "resamples": 10000, "seed": 7, "n": n,
            **extra}


def result(metric, base, tuned, diff, *, n=300, facets=None) -> dict:
    variants = {v: {"value": x, "details": {}, "ci": {"ci_low": x - 0.02, "ci_high": x + 0.02, "level": 0.95,
                                                      "resamples": 10000, "seed": 1, "n": n}}
                for v, x in (("base", base), ("agfsync", tuned))}
    return {"metric": metric, "model": "world", "pretrained": "data/world/models/sd1",
            "benchmark": {"name": "TIFA", "version": "world-v1"}, "higher_is_better": True, "variants": variants,
            "difference": {**diff, **(facets or {})}, "count": {"prompts": n, "images": 2 * n},
            "implementation": {"weights": {"aesthetic": 0.1, "clip": 0.55, "vqa": 0.35}}, "config_hash": "ab" * 8}


GOLD = result("gold", 0.521, 0.613, ci(0.092, 0.068, 0.115), facets={
    "by_element_type": {t: ci(0.05 * i - 0.05, 0.05 * i - 0.1, 0.05 * i, n=100 + i, base=0.4, agfsync=0.4 + 0.05 * i - 0.05)
                        for i, t in enumerate(TYPES)},
    "by_split": {"seen": ci(0.1, 0.05, 0.15, n=150, base=0.6, agfsync=0.7),
                 "unseen": ci(0.01, -0.03, 0.05, n=150, base=0.4, agfsync=0.41)}})
PROXY = result("proxy", 40.2, 44.3, ci(4.1, 2.0, 6.2))
TIFA = result("tifa", 0.30, 0.31, ci(0.01, -0.01, 0.03), facets={
    "by_element_type": {t: ci(0.0, -0.02, 0.02, n=100, base=0.3, agfsync=0.3) for t in TYPES}})
CLIP = result("clipscore", 25.0, 24.0, ci(-1.0, -1.5, -0.5))


def image(color) -> np.ndarray:
    """A 64x64 world-like image: a colored square on gray."""
    array = np.full((64, 64, 3), 200, dtype=np.uint8)
    array[20:44, 20:44] = color
    return array


def write_eval(root, cfg):
    """TIFA prompts, images and per-image scores of both variants, as the eval rules write them."""
    records, rows = [], {"base": [], "agfsync": []}
    for i, (pid, delta) in enumerate(GOLD_DELTAS.items()):
        qa = [{"question": f"Is there a {t} thing {i}?", "choices": ["yes", "no"], "answer": "yes", "element_type": t}
              for t in TYPES]
        records.append({"id": pid, "prompt": f"a <b>red</b> square number {i}", "group": "colors",
                        "split": "seen" if i % 2 else "unseen", "qa": qa})
        base_n, tuned_n = (0, delta) if delta > 0 else (-delta, 0) if delta < 0 else (2, 2)
        for variant, k in (("base", base_n), ("agfsync", tuned_n)):
            gold = [j < k for j in range(4)]
            vqa = [j < 4 - k for j in range(4)]  # the VQA judge disagrees: the grids must follow gold
            rows[variant].append({"prompt_id": pid, "group": "colors", "correct": vqa, "element_types": list(TYPES),
                                  "tifa": sum(vqa) / 4, "vqa": 50.0 + i, "clip": 20.0 + k, "aesthetic": 40.0,
                                  "seed": 1000 + i, "split": records[-1]["split"], "gold_correct": gold,
                                  "gold": sum(gold) / 4})
    paths = page.rebased(dag.report_paths(cfg)["world"], root)
    write_jsonl(paths["tifa"]["prompts"], records)
    for variant in ("base", "agfsync"):
        color = (200, 30, 30) if variant == "base" else (30, 30, 200)
        shard_rows = [{"prompt_id": r["id"], "candidate": 0, "image": image_member(r["id"], 0), "seed": 1000 + i,
                       "prompt": r["prompt"], "variant": variant} for i, r in enumerate(records)]
        halves = (shard_rows[:8], shard_rows[8:])  # two shards: the grids find images in either
        for index, part in enumerate(halves):
            write_shard(paths["tifa"]["shards"][variant][index], part,
                        [(r["image"], encode_png(image(color))) for r in part])
            write_jsonl(paths["tifa"]["scores"][variant][index], rows[variant][index * 8:(index + 1) * 8])
        for path in paths["tifa"]["shards"][variant][2:]:
            write_shard(path, [], [])
            write_jsonl(paths["tifa"]["scores"][variant][paths["tifa"]["shards"][variant].index(path)], [])
    return paths


def write_training(root, cfg, paths, trajectory_warning):
    """Candidates, their scores, the pairs (agfsync.core.pairs), training metrics and the trajectory."""
    qa, shard_rows, members, scores = [], [], [], []
    for p, category in enumerate(("world/colors", "world/colors", "world/counting", "world/spatial")):
        pid = f"t-{p:02d}"
        qa.append({"id": pid, "prompt": f"training prompt {p}", "category": category})
        for k in range(8):
            shard_rows.append({"prompt_id": pid, "candidate": k, "image": image_member(pid, k), "seed": k,
                               "prompt": f"training prompt {p}"})
            members.append((image_member(pid, k), encode_png(image((30 * k, 100, 50)))))
            scores.append({"prompt_id": pid, "candidate": k, "image": image_member(pid, k), "vqa": 10.0 * k,
                           "clip": 20.0 + k + 0.5 * k * p, "aesthetic": 50.0 - k, "vqa_correct": [k > 3], "seed": k})
    write_jsonl(root.parent / "qa.jsonl", qa)
    write_shard(paths["candidate_shards"]["00000"], shard_rows, members)
    write_jsonl(paths["score_shards"]["00000"], scores)
    for key in list(paths["candidate_shards"])[1:]:
        write_shard(paths["candidate_shards"][key], [], [])
        write_jsonl(paths["score_shards"][key], [])
    select_pairs(settings(cfg, "pairs_select"), list(paths["score_shards"].values()), root.parent / "qa.jsonl",
                 list(paths["candidate_shards"].values()), paths["pairs"], paths["pairs_summary"])
    write_jsonl(paths["train_metrics"], [{"step": s, "loss": 0.69 - s / 1000, "implicit_acc": 0.5 + s / 1000,
                                          "reward_margin": s / 100, "lr": 2e-5} for s in range(1, 301)])
    write_json(paths["train_summary"], {"steps": 300, "global_batch": 16, "lora_rank": None, "processes": 1,
                                        "zero_stage": 0, "optimizer": "adamw", "loss": "dpo", "wall_seconds": 900.0,
                                        "config_hash": "cd" * 8})
    points = [{"step": s, "fraction": s / 300, "n": 100,
               "proxy": {"mean": 40 + s / 100, "ci_low": 39 + s / 100, "ci_high": 41 + s / 100, "delta": s / 100,
                         "delta_ci_low": s / 100 - 1, "delta_ci_high": s / 100 + 1},
               "gold": {"mean": 0.5 - s / 7500, "ci_low": 0.45 - s / 7500, "ci_high": 0.55 - s / 7500,
                        "delta": -s / 7500, "delta_ci_low": -s / 7500 - 0.03, "delta_ci_high": -s / 7500 + 0.03}}
              for s in (0, 75, 150, 225, 300)]
    write_json(paths["trajectory"], {"points": points, "warning": trajectory_warning, "measures": ["proxy", "gold"],
                                     "ci": {"method": "percentile bootstrap over prompts"}})
    write_json(paths["prompts_summary"], {"num_prompts": 240})


def build(tmp_path, cfg, *, warning=WARNING, results=None):
    root = tmp_path / "results"
    paths = write_eval(root, cfg)
    write_training(root, cfg, paths, warning)
    for metric, value in (results or {"gold": GOLD, "proxy": PROXY, "tifa": TIFA, "clipscore": CLIP}).items():
        write_json(paths["metrics"][metric], value)
    html = page.build_report(settings(cfg, "report"), tmp_path / "report.html", {"world": paths},
                             config_hash="0" * 16)
    return html, paths


@pytest.fixture(scope="module")
def world_page(world_config, tmp_path_factory):
    return build(tmp_path_factory.mktemp("report"), world_config)


# ----------------------------------------------------------------------------- words


def test_the_headline_states_the_gold_change_with_its_ci():
    text = verdicts.headline({"gold": GOLD, "proxy": PROXY}, world=True)
    assert text == ("AGFSync raised gold alignment from 52.1% to 61.3% (+9.2 points, 95% CI +6.8 to +11.5) on 300 "
                    "held-out prompts; proxy reward rose, +4.10 (95% CI +2.00 to +6.20).")


def test_a_ci_that_holds_zero_is_no_measurable_change():
    flat = copy.deepcopy(GOLD)
    flat["variants"]["agfsync"]["value"] = 0.530
    flat["difference"].update(value=0.009, ci_low=-0.012, ci_high=0.030)
    text = verdicts.headline({"gold": flat, "tifa": TIFA, "clipscore": CLIP}, world=True)
    assert text.startswith("AGFSync did not measurably change gold alignment (52.1% to 53.0%; +0.9 points, 95% CI "
                           "-1.2 to +3.0) on 300 held-out prompts; ")
    assert "TIFA score did not measurably change, +1.0 points (95% CI -1.0 to +3.0)" in text
    assert "CLIP score fell, -1.00 (95% CI -1.50 to -0.50)" in text
    assert verdicts.improved(flat["difference"]) == "no measurable change"
    assert verdicts.improved(CLIP["difference"]) == "no: worse" and verdicts.improved(GOLD["difference"]) == "yes"
    assert verdicts.improved({"value": 1.0}) == "no CI"
    down = copy.deepcopy(GOLD)
    down["variants"]["agfsync"]["value"] = 0.45
    down["difference"].update(value=-0.071, ci_low=-0.09, ci_high=-0.05)
    text = verdicts.headline({"gold": down, "proxy": PROXY}, world=True)
    assert text.startswith("AGFSync lowered gold alignment from 52.1% to 45.0% (-7.1 points, 95% CI -9.0 to -5.0)")
    assert "The AI judges' reward rose while gold alignment fell" in text


def test_without_gold_the_headline_leads_with_tifa():
    text = verdicts.headline({"tifa": TIFA, "proxy": PROXY}, world=False)
    assert text.startswith("AGFSync did not measurably change TIFA score (30.0% to 31.0%; +1.0 points, 95% CI -1.0 "
                           "to +3.0) on 300 TIFA prompts; proxy reward rose")


# ----------------------------------------------------------------------------- the page


def test_the_page_has_every_section_and_the_verdicts(world_page):
    html, _ = world_page
    for ident in ("summary", "world-note", "summary-table", "headline-world", "scale-world", "results-world",
                  "charts-world", "gold-parts", "element_type-world", "split-world", "trajectory-world",
                  "training-world", "distributions-world", "preference-world", "eval-images-world", "gains-world",
                  "losses-world", "pairs-images-world", "provenance"):
        assert f'id="{ident}"' in html, ident
    assert ("AGFSync raised gold alignment from 52.1% to 61.3% (+9.2 points, 95% CI +6.8 to +11.5) on 300 "
            "held-out prompts") in html
    assert "not SD 1.5 or SDXL" in html and "docs/world.md" in html
    assert ("240 training prompts, 8 candidates per prompt (1,920 images), 4 preference pairs (0 prompts dropped); "
            "300 Diffusion-DPO steps at a global batch of 16 pairs (full UNet); evaluated on 300 held-out TIFA "
            "prompts") in html
    results = html[html.index('id="results-world"'):html.index("</table>", html.index('id="results-world"'))]
    assert results.count('class="up">yes<') == 2 and results.count('class="down">no: worse<') == 1
    assert results.count('class="flat">no measurable change<') == 1
    split = html[html.index('id="split-world"'):]
    assert "<td>unseen</td>" in split[:split.index("</table>")]


def test_the_warning_is_printed_prominently(world_page, world_config, tmp_path):
    html, _ = world_page
    for where in ("top", "trajectory"):  # at the top of the page, and above the trajectory figure
        box = f'<div class="warning" role="alert" id="warning-{where}-world"><b>&#9888; {WARNING}</b></div>'
        assert html.count(box) == 1
    assert html.index('id="warning-top-world"') < html.index('id="summary-table"')
    assert html.index('id="warning-trajectory-world"') < html.index('id="trajectory-world"')
    quiet, _ = build(tmp_path / "quiet", world_config, warning=None)
    assert 'class="warning"' not in quiet and "No reward-hacking warning" in quiet
    possible = "Possible reward hacking (not significant): from step 150 to step 300 the proxy rose."
    amber, _ = build(tmp_path / "possible", world_config, warning=possible)
    assert amber.count(f'<div class="caution" role="alert" id="warning-top-world"><b>&#9888; {possible}</b></div>') == 1
    assert 'class="warning"' not in amber


def test_the_grids_show_the_largest_gold_gains_and_losses(world_page):
    html, paths = world_page
    data = report_data.load("world", paths)
    assert data.accuracy_key() == "gold_correct"
    gains, losses = grids.biggest_changes(data.per_image, "gold_correct")
    assert [pid for pid, _ in gains] == GAINS and [pid for pid, _ in losses] == LOSSES
    assert gains[0] == ("w-00", 1.0) and losses[0] == ("w-06", -1.0)
    start, middle = html.index('id="gains-world"'), html.index('id="losses-world"')
    end = html.index("Same prompt and seed for both models", middle)

    def shown(text):
        return list(dict.fromkeys(re.findall(r"w-\d\d", text)))

    assert shown(html[start:middle]) == GAINS and shown(html[middle:end]) == LOSSES
    # the oracle's verdict on every question of a shown prompt: w-00 went from 0/4 to 4/4
    figure = html[html.index("w-00", start):html.index("</figure>", html.index("w-00", start))]
    assert "0/4 &rarr; 4/4 correct (oracle, +100 points)" in figure
    assert figure.count('<span class="bad">&#10007;</span></td><td><span class="ok">&#10003;</span>') == 4
    assert "Is there a counting thing 0?" in figure and "a &lt;b&gt;red&lt;/b&gt; square number 0" in figure


def test_images_are_upscaled_smoothly_and_the_page_is_self_contained(world_page):
    html, _ = world_page
    figures = re.findall(r'<figure class="plot".*?</figure>', html, flags=re.S)  # the matplotlib figures (PNG inline)
    assert len(figures) == 4 and all("data:image/png;base64," in f and ".pdf" in f for f in figures)
    grids = re.sub(r'<figure class="plot".*?</figure>', "", html, flags=re.S)
    encoded = re.findall(r'src="data:image/png;base64,([^"]+)"', grids)
    assert len(encoded) == 2 * (6 + 6) + 3 * 8  # gains and losses, base and AGFSync; 3 prompts x 8 candidates
    decoded = Image.open(io.BytesIO(base64.b64decode(encoded[0])))
    assert decoded.size == (192, 192)
    assert len(decoded.convert("RGB").getcolors(1 << 16)) > 2  # Lanczos: edge tones; nearest would keep 2 colors
    assert "pixelated" not in html
    assert set(re.findall(r"https?://[^\s\"'<>)]+", html)) == {"http://www.w3.org/2000/svg"}
    assert "<b>red</b>" not in html  # prompts are escaped


def test_all_candidates_of_three_training_prompts_with_their_scores(world_page):
    html, _ = world_page
    section = html[html.index('id="pairs-images-world"'):]
    figures = section.split('<figure class="cands">')[1:]
    assert len(figures) == 3
    assert [re.search(r"\((t-\d\d),", f).group(1) for f in figures] == ["t-00", "t-02", "t-03"]  # one per category
    for figure in figures:
        assert figure.count("<img ") == 8
        assert figure.count('class="badge winner"') == 1 and figure.count('class="badge loser"') == 1
    first = figures[0]
    # sorted by the weighted total (the demo's weights 0.60 / 0.30 / 0.10): t-00's candidate 7 (vqa 70, clip 27,
    # aesthetic 43) is the winner
    assert first.index('class="cand winner"') < first.index('class="cand "') < first.index('class="cand loser"')
    assert "#7 total <b>54.40</b>" in first and "vqa 70.0 &middot; clip 27.0 &middot; aesthetic 43.0" in first


def test_a_page_from_a_single_result_file(world_config, tmp_path):
    """Missing files leave notes: the page still builds (agfsync report on part of a tree)."""
    root = tmp_path / "results"
    paths = page.rebased(dag.report_paths(world_config)["world"], root)
    write_json(paths["metrics"]["gold"], GOLD)
    html = page.build_report(settings(world_config, "report"), tmp_path / "r.html", {"world": paths})
    assert "Gold accuracy (world oracle)" in html and 'id="gold-parts"' in html and "95% CI" in html
    assert "No training metrics." in html and "No proxy-vs-gold trajectory (not computed yet)." in html


def test_a_metric_that_gave_every_image_pair_the_same_score_is_left_out_with_the_reason(world_config, tmp_path):
    """A VQA judge that answers from the question alone (the world's BLIP-2 until 2026-11-30):
    TIFA (VQA) differs by exactly 0 on every prompt. Such a metric cannot measure what AGFSync changed; the page says so instead of a
    "no measurable change" row, and metrics.tsv keeps its numbers."""
    blind = result("tifa", 0.43, 0.43, ci(0.0, 0.0, 0.0), facets={
        "by_element_type": {t: ci(0.0, 0.0, 0.0, n=100, base=0.3, agfsync=0.3) for t in TYPES}})
    html, paths = build(tmp_path, world_config, results={"gold": GOLD, "proxy": PROXY, "tifa": blind, "clipscore": CLIP})
    section = html[html.index('id="model-world"'):]
    assert ('<div class="note" id="left-out-world">Left out of this report (the numbers stay in '
            '<code>results/world/&lt;metric&gt;.json</code> and <code>results/metrics.tsv</code>):<ul><li>TIFA (VQA): it '
            'gave the base and the AGFSync image the same score on every one of its 300 prompts (difference exactly 0, '
            '95% CI [0, 0]), so it did not respond to what AGFSync changed and cannot measure it.</li></ul></div>') in section
    assert "TIFA (VQA) &uarr;" not in html and "TIFA score" not in html  # no row, no headline phrase, no facet column
    assert "Gold accuracy (world oracle) &uarr;" in html and "CLIP score &uarr;" in html
    # a difference of 0 whose CI is not [0, 0] is a measured "no change", and stays
    flat = result("tifa", 0.43, 0.43, ci(0.0, -0.01, 0.01))
    html, _ = build(tmp_path / "flat", world_config, results={"gold": GOLD, "tifa": flat})
    assert "TIFA (VQA) &uarr;" in html and 'id="left-out-world"' not in html


# ----------------------------------------------------------------------------- inputs and charts


def test_the_rule_reads_every_file_the_page_reads(world_config):
    inputs = set(dag.report_inputs(world_config))
    files = dag.report_paths(world_config)["world"]

    def flat(value):
        if isinstance(value, dict):
            return [p for item in value.values() for p in flat(item)]
        if isinstance(value, list):
            return [p for item in value for p in flat(item)]
        return [] if value is None else [value]

    read = set(flat(files)) - {files["train_metrics"], files["train_summary"]}
    assert read <= inputs, sorted(read - inputs)
    assert layout.TRAINED.format(model="world") in inputs
    assert {"results/world/trajectory.json", "results/prompts/prompts_summary.json", "results/eval/tifa/prompts.jsonl",
            "results/world/eval/agfsync/tifa/scores-00002.jsonl", "results/world/scores/shard-00001.jsonl"} <= inputs
    assert len(dag.report_inputs(world_config)) == len(inputs)  # no duplicates
    off = copy.deepcopy(world_config)
    off["eval"]["trajectory"]["enabled"] = False
    assert "results/world/trajectory.json" not in dag.report_inputs(off)


def test_axes_have_nice_ticks():
    assert svg.nice_range(1, 20) == (0, 20, 5)
    assert [svg.fmt(t, 5) for t in svg.ticks(0, 20, 5)] == ["0", "5", "10", "15", "20"]
    low, high, step = svg.nice_range(1e-5, 1e-4, 4)
    assert low >= 0 and high >= 1e-4
    assert svg.nice_range(2e-5, 2e-5)[0] >= 0  # a constant learning rate: no axis below zero
    assert svg.fmt(0.25, 0.25) == "0.25" and svg.fmt(0.5, 0.1) == "0.5"
    chart = svg.line_chart("Loss", {"loss": [(s, 1 / s) for s in range(1, 101)]}, y_label="loss")
    assert "<title>Loss</title>" in chart and "mean of 4 steps" in chart and "training step" in chart


def test_the_page_reads_result_files_as_the_metric_stage_writes_them(world_config, tmp_path):
    """gold.json and tifa.json from agfsync.stages.tifa_results over the per-image rows: the page and
    metrics.tsv (page.run, as the rule) read every shape the stage writes."""
    import sys

    from agfsync.core.io import read_jsonl
    from agfsync.stages.tifa_results import gold_result, tifa_result

    root = tmp_path / "results"
    paths = write_eval(root, world_config)
    rows = {v: [r for p in paths["tifa"]["scores"][v] for r in read_jsonl(p)] for v in ("base", "agfsync")}
    s = settings(world_config, "eval_metric", model="world")
    for name, make in (("gold", gold_result), ("tifa", tifa_result)):
        write_json(paths["metrics"][name], make("world", s, "ef" * 8, rows))
    html = page.run(settings(world_config, "report"), {}, {"report": str(tmp_path / "r.html"),
                                                           "tsv": str(tmp_path / "m.tsv")},
                    paths={"world": paths}, config_hash="0" * 16)
    gold = json.loads((root / "world" / "gold.json").read_text())
    assert verdicts.headline({"gold": gold}, world=True)[:-1] + "; TIFA score" in html
    assert "<td>unseen</td>" in html and 'id="gains-world"' in html and "on 16 held-out prompts" in html
    assert (tmp_path / "m.tsv").read_text().startswith("model\tbenchmark\tmetric\tvariant")


def test_without_gold_the_grids_follow_the_vqa_verdicts(world_page):
    _, paths = world_page
    data = report_data.load("world", paths)
    for rows in data.per_image.values():
        for row in rows.values():
            del row["gold_correct"], row["gold"]
    assert data.accuracy_key() == "correct"
    html = grids.change_grid("world", data)
    middle = html.index('id="losses-world"')
    # the synthetic VQA judge disagrees with the oracle: its gains are the oracle's losses
    assert list(dict.fromkeys(re.findall(r"w-\d\d", html[:middle]))) == LOSSES
    assert list(dict.fromkeys(re.findall(r"w-\d\d", html[middle:]))) == GAINS
    assert "Largest gains in TIFA score (the VQA judge&#x27;s verdicts)" in html and "(VQA judge, +100 points)" in html


def test_per_group_tables_of_hps_and_mjhq():
    from agfsync.report.sections_results import detail_tables

    def variants(key, field, base, tuned):
        return {"base": {"details": {key: {g: {field: v} for g, v in base.items()}}},
                "agfsync": {"details": {key: {g: {field: v} for g, v in tuned.items()}}}}

    html = detail_tables({
        "hpsv2": {"benchmark": {"version": "v2.1"},
                  "variants": variants("styles", "mean", {"anime": 20.1, "photo": 22.5}, {"anime": 21.0, "photo": 22.0})},
        "mjhq_fid": {"implementation": {"a": 1},
                     "variants": variants("by_category", "fid", {"<x>": 12.345, "y": 9.0}, {"<x>": 11.0, "y": 9.5})}})
    assert html == (
        "<h4>HPS v2 per style (v2.1)</h4><table><tr><th>Style</th><th>Base</th><th>AGFSync</th><th>&Delta;</th></tr>"
        "<tr><td>anime</td><td>20.10</td><td>21.00</td><td>+0.90</td></tr>"
        "<tr><td>photo</td><td>22.50</td><td>22.00</td><td>-0.50</td></tr></table>"
        "<h4>MJHQ-30K FID per category (lower is better)</h4><table><tr><th>Category</th><th>Base</th><th>AGFSync</th>"
        "<th>&Delta;</th></tr><tr><td>&lt;x&gt;</td><td>12.35</td><td>11</td><td>-1.345</td></tr>"
        "<tr><td>y</td><td>9</td><td>9.5</td><td>+0.5</td></tr></table><p class=\"note\">a: 1</p>")


def test_tifa_answering_and_its_disagreement_with_ours_are_stated():
    from agfsync.report.sections_results import detail_tables

    def variant(rate, n):
        return {"details": {"answering_disagreement": {"questions": n, "disagree": round(rate * n), "rate": rate}}}

    official = {"implementation": {"answering": "tifa: the official <protocol>"},
                "variants": {"base": variant(0.125, 1200), "agfsync": variant(0.25, 1200)}}
    assert detail_tables({"tifa": official}) == (
        '<p class="note">TIFA answering: tifa: the official &lt;protocol&gt;. Our choice scoring picks another '
        "answer than the official protocol on the same images: base 12.5% of 1,200 questions; AGFSync 25.0% of "
        "1,200 questions</p>")
    ours = {"implementation": {"answering": "choices: ours"}, "variants": {"base": {"details": {}},
                                                                          "agfsync": {"details": {}}}}
    assert detail_tables({"tifa": ours}) == '<p class="note">TIFA answering: choices: ours</p>'


def _hps_result(version="v2.0", pretrained="CompVis/stable-diffusion-v1-4", prompts=3200) -> dict:
    styles = {"anime": 27.5, "concept-art": 26.0, "paintings": 26.5, "photo": 27.1}
    details = {"styles": {s: {"mean": v, "num_images": prompts // 4} for s, v in styles.items()}}
    return {"metric": "hpsv2", "model": "sd14", "pretrained": pretrained,
            "benchmark": {"name": "HPS v2", "version": version}, "higher_is_better": True,
            "variants": {"base": {"value": 26.78, "details": details}, "agfsync": {"value": 27.0, "details": details}},
            "difference": {"value": 0.22, "by_group": {s: 0.0 for s in styles}}, "count": {"prompts": prompts}}


def test_published_hps_numbers_sit_beside_ours_only_where_benchmark_protocol_and_model_match():
    from agfsync.report.sections_results import detail_tables
    from agfsync.report.table import result_rows

    html = detail_tables({"hpsv2": _hps_result()})
    assert ("<h4>HPS v2: published vs ours, base model</h4><table><tr><th>Part</th><th>Published</th>"
            "<th>Ours, base</th><th>Ours &minus; published</th></tr>"
            "<tr><td>average</td><td>26.95</td><td>26.78</td><td>-0.17</td></tr>"
            "<tr><td>anime</td><td>27.26</td><td>27.50</td><td>+0.24</td></tr>"
            "<tr><td>concept-art</td><td>26.61</td><td>26.00</td><td>-0.61</td></tr>"
            "<tr><td>paintings</td><td>26.66</td><td>26.50</td><td>-0.16</td></tr>"
            "<tr><td>photo</td><td>27.27</td><td>27.10</td><td>-0.17</td></tr></table>"
            "<p class=\"note\">Published: tgxs002/HPSv2 README, benchmark table (HPS v2.0, SD v1.4); the same "
            "benchmark version (v2.0), base model (CompVis/stable-diffusion-v1-4) and all 3,200 prompts. Its sampler "
            "and seeds are the authors', ours are the config's.</p>") in html
    published = [(r["metric"], r["value"], r["n"], r["ci_low"]) for r in result_rows(_hps_result())
                 if r["variant"] == "published"]
    assert published == [("hpsv2", 26.95, None, None), ("hpsv2/style=anime", 27.26, None, None),
                         ("hpsv2/style=concept-art", 26.61, None, None), ("hpsv2/style=paintings", 26.66, None, None),
                         ("hpsv2/style=photo", 27.27, None, None)]
    v21 = [(r["metric"], r["value"]) for r in result_rows(_hps_result("v2.1")) if r["variant"] == "published"]
    assert v21 == [("hpsv2", 25.35)]
    # another base model (no published row), or a subset of the prompts: nothing beside ours
    for other in (_hps_result(pretrained="stable-diffusion-v1-5/stable-diffusion-v1-5"), _hps_result(prompts=400)):
        assert "published vs ours" not in detail_tables({"hpsv2": other})
        assert not [r for r in result_rows(other) if r["variant"] == "published"]


def test_the_compute_table_and_hub_commits(world_config, tmp_path):
    """Compute per model and stage from benchmark files under the root, GPU-hours from the GPUs
    per job; hub commits from the download markers; a tree without benchmarks says so."""
    from test_costs import bench

    root = tmp_path / "results"
    paths = page.rebased(dag.report_paths(world_config)["world"], root)
    write_json(paths["metrics"]["gold"], GOLD)
    bare = page.build_report(settings(world_config, "report"), tmp_path / "bare.html", {"world": paths}, root=tmp_path)
    assert 'id="compute-none"' in bare and "Compute: not measured (no benchmark files)." in bare
    bench(tmp_path, "benchmarks/world/candidates_generate/shard-00000.tsv", 3600.5)
    bench(tmp_path, "benchmarks/world/candidates_generate/shard-00001.tsv", 1799.5)
    bench(tmp_path, "benchmarks/world/train_dpo.tsv", 7200.0, 1800.0)
    bench(tmp_path, "benchmarks/other/train_dpo.tsv", 100.0)  # not a run model: left out
    bench(tmp_path, "benchmarks/world/pairs_select.tsv", lines=["s\th:m:s", "oops\t0:00:01"])
    write_json(tmp_path / "resources/hub/owner--clip.json", {"repo_id": "owner/clip", "revision": None,
                                                              "commit": "c" * 40})
    html = page.build_report(settings(world_config, "report"), tmp_path / "r.html", {"world": paths}, root=tmp_path,
                             hub={"owner/clip": None, "owner/absent": "v2"},
                             gpus={"candidates_generate": 1, "train_dpo": 4})
    table_html = html[html.index('id="compute-table"'):html.index('id="compute-totals"')]
    cells = re.findall(r"<tr><td>world</td><td class=\"left\">(\w+)</td><td>(\d+)</td><td>(\d+)</td>"
                       r"<td>([\d:]+)</td><td>([\d.,]+)", table_html)
    assert cells == [("candidates_generate", "2", "1", "1:30:00", "1.50"), ("train_dpo", "1", "4", "2:30:00", "10.00")]
    assert "<th class=\"left\">all stages</th><th>3</th><th></th><th>4:00:00</th><th>11.50</th>" in html
    assert "pairs_select.tsv:2: wall seconds &#x27;oops&#x27;" in html  # the torn file, named, left out
    assert "Compute: 3 jobs, wall 4:00:00, 11.50 GPU-hours (1 unreadable benchmark files left out)" in html
    hub = html[html.index('id="hub-commits"'):]
    assert f"<code>owner/clip</code> (default branch): commit <code>{'c' * 40}</code>" in hub
    assert "<code>owner/absent</code> (revision v2): commit unknown (no download marker here)" in hub
