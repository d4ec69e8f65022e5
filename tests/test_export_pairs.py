"""`agfsync export-pairs`: the preference pairs as a Hugging Face dataset folder (parquet with the
images, a dataset card, export.json), built here from synthetic pairs and candidate shards.

`datasets` is not installed: instead of `load_dataset`, the tests check what it reads, the
parquet schema's "huggingface" metadata ({"info": {"features": ...}}, datasets' arrow_writer.py
and features.py) and the card's YAML front matter (configs, dataset_info.features)."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from agfsync.core.io import DataError, write_jsonl
from agfsync.core.shards import encode_png, image_member, write_shard

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = 3
SUBSCORES = ("vqa", "clip", "aesthetic")


def _pixels(pid: str, k: int) -> np.ndarray:
    rng = np.random.default_rng(zlib.crc32(f"{pid}.{k}".encode()))
    return rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)


def make_run(root: Path, num_prompts: int = 12, shards: int = 2, drop: tuple | None = None) -> dict:
    """Candidate shards (results/m/candidates/shard-0000S.tar) and pairs.jsonl as stage 4 writes
    them; `drop` = (prompt id, candidate) whose image member is left out of its shard."""
    cand_dir = root / "results" / "m" / "candidates"
    pids = [f"cat{i % 3}-{i:04d}" for i in range(num_prompts)]
    pixels, pairs, qa = {}, [], []
    per_shard = -(-num_prompts // shards)
    for s in range(shards):
        rows, members = [], []
        shard_path = f"results/m/candidates/shard-{s:05d}.tar"  # as the workflow records it (relative)
        for n, pid in enumerate(pids[s * per_shard:(s + 1) * per_shard]):
            totals = []
            for k in range(CANDIDATES):
                pixels[pid, k] = _pixels(pid, k)
                rows.append({"prompt_id": pid, "candidate": k, "image": image_member(pid, k), "seed": 1000 * n + k,
                             "pretrained": "tiny/sd1", "latent": None})
                if (pid, k) != drop:
                    members.append((image_member(pid, k), encode_png(pixels[pid, k])))
                totals.append({"candidate": k, "image": image_member(pid, k), "seed": 1000 * n + k,
                               "vqa": 10.0 + k + n, "clip": 20.5 + 2 * k, "aesthetic": 3 * k + 0.25,
                               "total": 0.35 * (10.0 + k + n) + 0.55 * (20.5 + 2 * k) + 0.1 * (3 * k + 0.25),
                               "shard": shard_path})
            winner, loser = totals[-1], totals[0]
            pairs.append({"prompt_id": pid, "prompt": f"a picture number {pid}", "category": pid.split("-")[0],
                          "margin": winner["total"] - loser["total"], "winner": winner, "loser": loser})
            qa.append({"id": pid, "category": pid.split("-")[0], "prompt": f"a picture number {pid}",
                       "qa": [{"question_id": f"{pid}-q00", "question": "is there a picture?", "choices": ["yes", "no"],
                               "answer": "yes", "element": "picture", "element_type": "object"}]})
        write_shard(cand_dir / f"shard-{s:05d}.tar", rows, members)
    write_jsonl(root / "pairs.jsonl", pairs)
    write_jsonl(root / "qa.jsonl", qa)
    return {"pairs": root / "pairs.jsonl", "qa": root / "qa.jsonl", "candidates": cand_dir, "records": pairs,
            "pixels": pixels}


def _export(run, out, **kwargs):
    from agfsync.stages.export_pairs import export_pairs

    return export_pairs(run["pairs"], run["candidates"], out, model="m", **kwargs)


def _table(out: Path):
    return pa.concat_tables([pq.read_table(p) for p in sorted((out / "data").glob("*.parquet"))])


def test_export_pairs_rows_columns_images_labels_and_scores(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "ds"
    summary = _export(run, out, config_digest="abc123", seed=7)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "export.json"]
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    table = _table(out)
    assert table.num_rows == len(run["records"]) == summary["rows"]
    image_type = pa.struct({"bytes": pa.binary(), "path": pa.string()})  # datasets' Image.pa_type
    assert table.schema.field("jpg_0").type == image_type and table.schema.field("jpg_1").type == image_type
    assert table.column_names[:5] == ["caption", "jpg_0", "jpg_1", "label_0", "label_1"]
    for name in ("label_0", "label_1", "margin", *(f"{s}_{k}" for s in ("winner", "loser") for k in (*SUBSCORES, "total"))):
        assert table.schema.field(name).type == pa.float64(), name
    for name in ("winner_candidate", "loser_candidate", "winner_seed", "loser_seed"):
        assert table.schema.field(name).type == pa.int64(), name
    for name in ("caption", "prompt_id", "category", "model"):
        assert table.schema.field(name).type == pa.string(), name
    orders = set()
    for row, pair in zip(table.to_pylist(), run["records"]):
        assert row["prompt_id"] == pair["prompt_id"] and row["caption"] == pair["prompt"] and row["model"] == "m"
        assert row["category"] == pair["category"] and row["margin"] == pair["margin"]
        assert row["label_0"] in (0.0, 1.0) and row["label_1"] == 1.0 - row["label_0"]
        orders.add(row["label_0"])
        preferred, other = (row["jpg_0"], row["jpg_1"]) if row["label_0"] == 1.0 else (row["jpg_1"], row["jpg_0"])
        for image, side in ((preferred, pair["winner"]), (other, pair["loser"])):
            assert image["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
            assert image["path"] == f"{pair['prompt_id']}-{side['candidate']}.png"
            decoded = np.asarray(Image.open(io.BytesIO(image["bytes"])))
            assert np.array_equal(decoded, run["pixels"][pair["prompt_id"], side["candidate"]])
        for name in ("winner", "loser"):
            assert row[f"{name}_candidate"] == pair[name]["candidate"] and row[f"{name}_seed"] == pair[name]["seed"]
            for key in (*SUBSCORES, "total"):
                assert row[f"{name}_{key}"] == pair[name][key]
    assert orders == {0.0, 1.0}  # Pick-a-Pic has both orders; so do we
    assert summary["label_0_ones"] == int(sum(table.column("label_0").to_pylist()))

    # what datasets reads: the "huggingface" schema metadata, {"info": {"features": ...}} in Features.to_dict form
    meta = json.loads(pq.read_schema(out / "data" / "train-00000-of-00001.parquet").metadata[b"huggingface"])
    feats = meta["info"]["features"]
    assert list(feats) == table.column_names
    assert feats["jpg_0"] == feats["jpg_1"] == {"_type": "Image"}
    assert feats["caption"] == {"dtype": "string", "_type": "Value"} and feats["label_0"]["dtype"] == "float64"
    assert feats["winner_seed"] == {"dtype": "int64", "_type": "Value"}

    info = json.loads((out / "export.json").read_text())
    assert info["config_digest"] == "abc123" and info["rows"] == table.num_rows and info["order_seed"] == 7
    from agfsync import __version__
    from agfsync.core.io import sha256_file

    assert info["agfsync_version"] == __version__
    assert info["sources"]["pairs"]["sha256"] == sha256_file(run["pairs"])
    assert info["files"][0]["sha256"] == sha256_file(out / "data" / "train-00000-of-00001.parquet")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.")]  # no temporary folder left


def test_export_pairs_card_front_matter_declares_configs_and_features(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "ds"
    _export(run, out, prompts_qa_path=run["qa"])
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}]
    features = {f["name"]: {k: v for k, v in f.items() if k != "name"} for f in front["dataset_info"]["features"]}
    assert features["jpg_0"] == features["jpg_1"] == {"dtype": "image"}
    assert features["caption"] == {"dtype": "string"} and features["label_0"] == {"dtype": "float64"}
    assert features["qa"]["list"][2] == {"name": "choices", "list": "string"}  # Features._to_yaml_list's form
    table = _table(out)
    assert list(features) == table.column_names
    assert front["dataset_info"]["splits"][0]["num_examples"] == table.num_rows
    assert 'load_dataset("parquet", data_dir=' in text and "push_to_hub" in text and "label_0" in text
    assert table.column("qa").to_pylist()[0] == [{"question_id": "cat0-0000-q00", "question": "is there a picture?",
                                                  "choices": ["yes", "no"], "answer": "yes", "element": "picture",
                                                  "element_type": "object"}]


def test_export_pairs_several_files_and_a_byte_identical_rerun(tmp_path):
    run = make_run(tmp_path, num_prompts=11)
    first, second = tmp_path / "a", tmp_path / "b"
    summary = _export(run, first, shard_rows=4)
    _export(run, second, shard_rows=4)
    names = [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert sorted(p.name for p in (first / "data").iterdir()) == names
    assert [pq.read_metadata(first / "data" / n).num_rows for n in names] == [4, 4, 3]
    assert [f["rows"] for f in summary["files"]] == [4, 4, 3]
    assert _table(first)["prompt_id"].to_pylist() == [p["prompt_id"] for p in run["records"]]
    for name in names:
        assert (first / "data" / name).read_bytes() == (second / "data" / name).read_bytes()
    assert (first / "README.md").read_bytes() == (second / "README.md").read_bytes()


def test_export_pairs_missing_image_or_shard_names_the_file_and_record(tmp_path):
    run = make_run(tmp_path, drop=("cat1-0001", 2))  # the winner of prompt cat1-0001
    with pytest.raises(DataError, match=r"shard-00000\.tar.*cat1-0001.*missing.*pairs\.jsonl, line 2"):
        _export(run, tmp_path / "ds")
    assert not (tmp_path / "ds").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.")]

    run = make_run(tmp_path / "gone")
    (run["candidates"] / "shard-00001.tar").unlink()
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 7: prompt id 'cat0-0006'.*shard-00001\.tar is missing"):
        _export(run, tmp_path / "gone" / "ds")

    run = make_run(tmp_path / "other")
    records = [dict(r) for r in run["records"]]
    records[3] = {**records[3], "winner": {**records[3]["winner"], "image": image_member("cat0-0003", 7)}}
    write_jsonl(run["pairs"], records)
    with pytest.raises(DataError, match=r"shard-00000\.tar: no image images/cat0-0003\.7\.png of prompt id "
                                        r"'cat0-0003' candidate 2 .*line 4"):
        _export(run, tmp_path / "other" / "ds")


def test_export_pairs_refuses_an_existing_folder_unless_overwrite(tmp_path):
    run = make_run(tmp_path, num_prompts=4)
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists.*--overwrite"):
        _export(run, out)
    assert (out / "keep.txt").read_text() == "mine"
    _export(run, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "export.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "pairs.jsonl", "qa.jsonl", "results"]


def test_export_pairs_cli_help_and_run_stay_pure_at_import(tmp_path):
    code = ("import sys, agfsync.export_cli, agfsync.stages.export_pairs; "
            "print(sorted(m for m in ('pyarrow', 'torch') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert done.stdout.strip() == "[]"

    from agfsync.cli import _stage
    from agfsync.export_cli import add_parser

    parser = argparse.ArgumentParser(prog="agfsync")
    add_parser(parser.add_subparsers(dest="command"), _stage)
    text = parser._subparsers._group_actions[0].choices["export-pairs"].format_help()
    assert 'load_dataset("parquet", data_dir=' in text and "push_to_hub" in text and "--overwrite" in text

    run = make_run(tmp_path, num_prompts=4)
    out = tmp_path / "cli"
    args = parser.parse_args(["export-pairs", "--config", str(REPO / "config" / "demo.yaml"), "--model", "world",
                              "--pairs", str(run["pairs"]), "--candidates", str(run["candidates"]), "--qa", "",
                              "--out", str(out), "--shard-rows", "3"])
    assert args.func(args) == 0
    info = json.loads((out / "export.json").read_text())
    assert info["rows"] == 4 and len(info["files"]) == 2 and len(info["config_digest"]) == 16
    assert "qa" not in info["columns"]
