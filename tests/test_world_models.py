"""The world's trained models: the shipped artifacts match their manifest and load through
agfsync's normal loaders; a shortened rebuild writes the same layout, deterministically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agfsync.core.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "data" / "world" / "models"
CONFIG_FILES = ("sd1/model_index.json", "sd1/unet/config.json", "sd1/vae/config.json", "sd1/text_encoder/config.json",
                "sd1/scheduler/scheduler_config.json", "sd1/tokenizer/tokenizer.json", "clip/config.json",
                "blip2/config.json", "clip/processor_config.json", "blip2/tokenizer.json")


def test_shipped_world_models_match_their_manifest_and_fit_the_budget():
    manifest = json.loads((SHIPPED / "MANIFEST.json").read_text())
    files = sorted(str(p.relative_to(SHIPPED)) for p in SHIPPED.rglob("*") if p.is_file() and p.name != "MANIFEST.json")
    assert files == sorted(manifest["files"])
    assert {name: sha256_file(SHIPPED / name) for name in files} == manifest["files"]
    assert manifest["bytes"] == sum((SHIPPED / name).stat().st_size for name in files) <= 12_000_000
    assert manifest["command"].startswith("agfsync world build data/world/models")
    assert all((SHIPPED / name).stat().st_size < 5_000_000 for name in files)  # the UNet is sharded


@pytest.fixture(scope="module")
def shortened(tmp_path_factory):
    from agfsync.world.build import Schedule, build

    out = tmp_path_factory.mktemp("world") / "models"
    manifest = build(out, seed=0, schedule=Schedule().shortened(0.01), command="test")
    return out, manifest


def test_shortened_rebuild_writes_the_shipped_layout_and_is_deterministic(shortened, tmp_path):
    from agfsync.world.build import Schedule, build

    out, manifest = shortened
    shipped = json.loads((SHIPPED / "MANIFEST.json").read_text())
    assert sorted(manifest["files"]) == sorted(shipped["files"])
    for name in CONFIG_FILES:  # same architecture and tokenizer; only the weights (and the VAE's scale) differ
        mine, theirs = (json.loads((d / name).read_text()) for d in (out, SHIPPED))
        if name == "sd1/vae/config.json":
            assert mine.pop("scaling_factor") != theirs.pop("scaling_factor")
        assert mine == theirs, name
    again = build(tmp_path / "again", seed=0, schedule=Schedule().shortened(0.01), command="test")
    assert again["files"] == manifest["files"]


UNET_SHARDS = ["sd1/unet/diffusion_pytorch_model-00001-of-00002.safetensors",
               "sd1/unet/diffusion_pytorch_model-00002-of-00002.safetensors"]


@pytest.mark.parametrize("part, changes", [("unet", [*UNET_SHARDS, "sd1/vae/config.json"]),
                                           ("blip2", ["blip2/model.safetensors"])])
def test_retraining_one_part_keeps_every_other_model_and_records_its_base(part, changes, shortened, tmp_path,
                                                                          monkeypatch):
    """`agfsync world build OUT --unet-from DIR` / `--blip2-from DIR`: everything else is
    DIR's bytes, the part is new (and deterministic), the manifest says what came from where."""
    from agfsync.cli import main
    from agfsync.world.build import Schedule

    base, before = shortened
    outs = []
    for name in ("a", "b"):
        argv = ["world", "build", str(tmp_path / name), f"--{part}-from", str(base), "--shorten", "0.002"]
        monkeypatch.setattr("sys.argv", ["agfsync", *argv])
        assert main(argv) == 0
        outs.append(json.loads((tmp_path / name / "MANIFEST.json").read_text()))
    after, again = outs
    assert after["files"] == again["files"]
    changed = sorted(name for name in before["files"] if after["files"][name] != before["files"][name])
    assert changed == changes, changed
    assert after[f"{part}_retrained_on"] == {"base": str(base), "base_command": "test",
                                             "base_schedule": before["schedule"]}
    assert [k for k in after if k.endswith("_retrained_on")] == [f"{part}_retrained_on"]
    steps = f"{part}_steps"
    assert after["schedule"][steps] == getattr(Schedule().shortened(0.002), steps) != before["schedule"][steps]
    assert after["schedule"]["clip_steps"] == before["schedule"]["clip_steps"]
    assert after["command"] == f"agfsync world build {tmp_path / 'a'} --{part}-from {base} --shorten 0.002"


def test_blip2_binding_recipe_is_recorded_and_loads(shortened, tmp_path, monkeypatch):
    """`--blip2-binding`: BLIP-2 with the eleventh round's recipe (build.BLIP2_BINDING), its
    settings in the manifest's schedule and its architecture in the saved config; it loads and
    answers through the scorer."""
    import torch

    from agfsync.cli import main
    from agfsync.models.loaders import load_blip2
    from agfsync.models.vqa import VQAScorer
    from agfsync.world import check, scenes
    from agfsync.world.build import BLIP2_BINDING, Schedule

    base, _ = shortened
    argv = ["world", "build", str(tmp_path / "b"), "--blip2-from", str(base), "--blip2-binding", "--shorten", "0.002"]
    monkeypatch.setattr("sys.argv", ["agfsync", *argv])
    assert main(argv) == 0
    schedule = json.loads((tmp_path / "b" / "MANIFEST.json").read_text())["schedule"]
    assert {k: schedule[k] for k in BLIP2_BINDING} == {**BLIP2_BINDING, "blip2_steps": 3}  # 1,800 x 0.002
    assert Schedule().blip2_slot_loss == Schedule().blip2_patch_loss == 0.0  # the shipped judge is without it
    config = json.loads((tmp_path / "b" / "blip2" / "config.json").read_text())
    assert (config["text_config"]["num_layers"], config["qformer_config"]["cross_attention_frequency"]) == (3, 1)
    shipped = json.loads((SHIPPED / "blip2" / "config.json").read_text())
    assert (shipped["text_config"]["num_layers"], shipped["qformer_config"]["cross_attention_frequency"]) == (2, 2)
    torch.set_num_threads(2)
    record = check.held_out_prompts(3, 1)[0]
    vqa = VQAScorer(*load_blip2(str(tmp_path / "b" / "blip2"), device="cpu"))
    (answers,) = vqa.answer([scenes.render(record["scene"])], record["qa"])
    assert all(a in q["choices"] for a, q in zip(answers, record["qa"]))


@pytest.mark.parametrize("flag", ["--unet-from", "--blip2-from"])
def test_retraining_a_part_of_a_directory_that_is_no_build_names_it(flag, tmp_path, capsys):
    from agfsync.cli import main

    assert main(["world", "build", str(tmp_path / "out"), flag, str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"agfsync world: error: {flag} {tmp_path}: no {tmp_path / 'MANIFEST.json'}; it must be a finished "
        "`agfsync world build` directory")
    assert not (tmp_path / "out").exists()


def test_blip2_binding_with_unet_from_is_refused(tmp_path, capsys):
    from agfsync.cli import main

    assert main(["world", "build", str(tmp_path / "out"), "--unet-from", str(SHIPPED), "--blip2-binding"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "agfsync world: error: --blip2-binding trains BLIP-2 and --unet-from only the UNet: give one of them")
    assert not (tmp_path / "out").exists()


def test_shipped_blip2_answers_from_the_image_not_from_the_question_alone():
    """On clean renders of held-out scenes the world's BLIP-2 answers most questions right,
    and far fewer when every question is asked about another scene's render: a judge that
    answered from the question's wording alone (as the BLIP-2 shipped before 2026-11-30 did,
    0.43 either way) fails."""
    import torch

    from agfsync.models.loaders import load_blip2
    from agfsync.models.vqa import VQAScorer
    from agfsync.world import check, scenes

    torch.set_num_threads(2)
    records = check.held_out_prompts(7, 60)
    renders = [scenes.render(r["scene"]) for r in records]
    vqa = VQAScorer(*load_blip2(str(SHIPPED / "blip2"), device="cpu"))

    def accuracy(images):
        right = [vqa.correct([image], r["qa"])[0] for r, image in zip(records, images)]
        return float(sum(x.sum() for x in right) / sum(x.size for x in right))

    own, other = accuracy(renders), accuracy(renders[1:] + renders[:1])
    assert own >= 0.75 and own - other >= 0.3, (own, other)


def test_blip2_scene_facts_name_each_color_with_its_shapes_sizes_and_positions():
    from agfsync.world import judges
    from agfsync.world.grammar import COLORS, POSITIONS, SHAPES, SIZES
    from agfsync.world.scenes import Obj, Scene

    red, blue = list(COLORS).index("red"), list(COLORS).index("blue")
    scene = Scene(objects=(Obj("circle", "red", "small", "left", 16, 32), Obj("circle", "red", "large", "right", 48, 32),
                           Obj("square", "blue", "small", "top", 32, 16)), background=200)
    facts = judges.scene_facts([scene])[0]
    assert facts.shape == (len(COLORS) * (len(SHAPES) + len(SIZES) + len(POSITIONS)),)
    by_size = len(COLORS) * len(SHAPES)
    by_position = by_size + len(COLORS) * len(SIZES)
    expected = {red * 3 + 0: 2 / 3, blue * 3 + 1: 1 / 3,
                by_size + red * 2 + 0: 1.0, by_size + red * 2 + 1: 1.0, by_size + blue * 2 + 0: 1.0,
                by_position + red * 5 + list(POSITIONS).index("left"): 1.0,
                by_position + red * 5 + list(POSITIONS).index("right"): 1.0,
                by_position + blue * 5 + list(POSITIONS).index("top"): 1.0}
    assert {i: round(float(v), 6) for i, v in enumerate(facts) if v} == {i: round(v, 6) for i, v in expected.items()}


@pytest.mark.parametrize("where", ["shipped", "shortened"])
def test_world_models_load_through_the_normal_loaders(where, shortened):
    import torch

    from agfsync.models.aesthetic import AestheticScorer
    from agfsync.models.clip_score import CLIPScorer
    from agfsync.models.loaders import load_aesthetic, load_blip2, load_clip
    from agfsync.models.vqa import VQAScorer
    from agfsync.world import check, questions, scenes
    from agfsync.world.data import rng_for

    models = SHIPPED if where == "shipped" else shortened[0]
    records = check.held_out_prompts(7, 2)
    with torch.no_grad():
        images = check._images(check._generator(models, 7, 2, 0.1), records, 2, "test")
    assert len(images) == 4 and images[0].size == (64, 64)
    vqa = VQAScorer(*load_blip2(str(models / "blip2"), device="cpu"))
    answers = vqa.answer(images[:1], records[0]["qa"])[0]
    assert all(a in q["choices"] for a, q in zip(answers, records[0]["qa"]))
    clip = CLIPScorer(*load_clip(str(models / "clip"), device="cpu"))
    assert clip.score(images, records[0]["prompt"]).shape == (4,)
    aesthetic = AestheticScorer(*load_aesthetic(str(models / "clip"), str(models / "aesthetic/head.pth"), device="cpu"))
    scores = aesthetic.score([scenes.render(scenes.sample_scene(rng_for(0, "t"), "colors")[1])])
    assert scores.shape == (1,)
    assert questions  # the QA writer the check uses


def test_blip2_vision_starts_from_the_world_clip():
    import torch

    from agfsync.models import tokenizers
    from agfsync.world import judges
    from agfsync.world.grammar import all_words

    torch.manual_seed(0)
    clip = judges.make_clip(tokenizers.clip_tokenizer(all_words(), 32))
    blip2, _ = judges.make_blip2(tokenizers.t5_tokenizer(all_words()))
    judges.vision_from_clip(blip2, clip)
    mine, theirs = blip2.vision_model.encoder.layers[1], clip.vision_model.encoder.layers[1]
    q, k, v = mine.self_attn.qkv.weight.chunk(3)
    assert torch.equal(q, theirs.self_attn.q_proj.weight) and torch.equal(v, theirs.self_attn.v_proj.weight)
    assert torch.equal(k, theirs.self_attn.k_proj.weight)
    assert torch.equal(mine.mlp.fc2.bias, theirs.mlp.fc2.bias)
    assert torch.equal(blip2.vision_model.embeddings.position_embedding[0],
                       clip.vision_model.embeddings.position_embedding.weight)


def test_world_check_reports_every_measure_with_its_count(shortened):
    """`agfsync world check` on the shortened models, at a tiny size: every key the issue
    asks for, each with its n, the gold breakdowns, and a table that marks the targets."""
    from agfsync.world import check

    models, _ = shortened
    result = check.run(models, seed=3, prompts=6, spread_prompts=2, quality_images=8)
    counts = {key: result[key]["n"] for key in check.TARGETS}
    questions = sum(len(r["qa"]) for r in check.held_out_prompts(3, 6))
    assert counts == {"oracle_accuracy_on_renders": questions, "base_recognisable_rate": 6, "base_gold_accuracy": 6,
                      "vqa_agreement": questions, "clip_gold_spearman": 6, "candidate_spread": 2,
                      "aesthetic_quality_spearman": 8,
                      "vqa_agreement_where_oracle_reads": result["vqa_agreement_where_oracle_reads"]["n"]}
    assert result["vqa_agreement_where_oracle_reads"]["n"] <= questions
    judge = result["vqa_diagnostics"]  # per question kind; the kinds partition the questions
    assert sum(v["n"] for v in judge["right_on_renders"].values()) == questions
    assert (sum(v["n"] for v in judge["agreement_where_oracle_reads"].values())
            == result["vqa_agreement_where_oracle_reads"]["n"])
    assert {kind.split(", ")[1] for kind in judge["right_on_renders"]} <= {"yes/no", "choice"}
    assert result["oracle_accuracy_on_renders"]["value"] == 1.0
    assert {k: v["n"] for k, v in result["base_gold_accuracy_by_split"].items()} == {"seen": 3, "unseen": 3}
    assert sum(v["n"] for v in result["base_gold_accuracy_by_category"].values()) == 6
    lines = check.table(result).splitlines()
    assert lines[1].startswith("oracle_accuracy_on_renders") and lines[1].endswith(">= 0.99  ok")


def test_judges_training_batches_pass_the_chosen_share_through_the_vae():
    """render_batch(roundtrip=...): a seeded share of the images goes through the round trip
    (here: a stand-in that paints them black), the rest and the labels are unchanged."""
    from PIL import Image

    from agfsync.world.data import render_batch

    def black(images):
        return [Image.new("RGB", im.size) for im in images]

    plain = render_batch(0, "clip", 3, 40, perturbed=0.3)
    mixed = render_batch(0, "clip", 3, 40, perturbed=0.3, roundtrip=black, roundtrip_p=0.3)
    changed = [i for i, (a, b) in enumerate(zip(plain[2], mixed[2])) if a.tobytes() != b.tobytes()]
    assert all(not any(mixed[2][i].getdata()[k] != (0, 0, 0) for k in range(0, 4096, 97)) for i in changed)
    share = sum(im.getbbox() is None for step in range(5)
                for im in render_batch(0, "clip", step, 40, roundtrip=black, roundtrip_p=0.3)[2]) / 200
    assert 0.2 <= share <= 0.45  # 30% asked; 69 of 200 drawn
    assert [i for i, im in enumerate(mixed[2]) if im.getbbox() is None] == changed
    assert (plain[0], plain[3], plain[4]) == (mixed[0], mixed[3], mixed[4])  # descriptions, qualities, captions
    again = render_batch(0, "clip", 3, 40, perturbed=0.3, roundtrip=black, roundtrip_p=0.3)
    assert [im.tobytes() for im in again[2]] == [im.tobytes() for im in mixed[2]]
    assert render_batch(0, "clip", 3, 40, perturbed=0.3, roundtrip=black, roundtrip_p=1.0)[2][0].getbbox() is None


def test_blip2_slot_targets_bind_each_position_to_its_objects_color_shape_and_size():
    from agfsync.world import judges
    from agfsync.world.scenes import Obj, Scene

    scene = Scene(objects=(Obj("triangle", "purple", "large", "left", 13, 31),
                           Obj("square", "red", "small", "center", 32, 33)), background=200)
    # positions left, right, top, bottom, center; colors red..purple, shapes circle, square,
    # triangle, sizes small, large, each index + 1 (0: nothing there)
    assert judges.slot_targets([scene])[0].tolist() == [[6, 3, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 2, 1]]


def test_blip2_patch_targets_name_each_patch_and_the_object_covering_its_centre():
    from agfsync.world import judges
    from agfsync.world.scenes import Obj, Scene

    # patch centres lie at 4, 12, 20, ... px; a small blue circle (half-extent 7) at (12, 32) covers
    # those within 7 px on both axes: x = 12 (column 1), y = 28 and 36 (rows 3 and 4)
    scene = Scene(objects=(Obj("circle", "blue", "small", "left", 12, 32),), background=200)
    targets = judges.patch_targets([scene])[0]
    assert targets.shape == (64, 3) and targets[:, 0].tolist() == list(range(64))
    covered = {int(i): (int(c), int(s)) for i, (_, c, s) in enumerate(targets) if c}
    assert covered == {3 * 8 + 1: (5, 1), 4 * 8 + 1: (5, 1)}
