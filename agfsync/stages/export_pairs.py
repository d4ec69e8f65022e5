"""`agfsync export-pairs`: the preference pairs as a Hugging Face dataset (parquet with the images).

Pure (no torch); pyarrow and yaml are imported when an export runs. The folder it writes
is what `datasets.load_dataset("parquet", data_dir=OUT)` and `datasets.load_dataset(OUT)`
read, and what the Hub's viewer shows once uploaded:

  OUT/data/train-00000-of-0000N.parquet   `shard_rows` pairs per file, in the pairs file's order
  OUT/README.md                           dataset card: YAML front matter (configs, dataset_info.features)
  OUT/export.json                         counts, sources (sha256 of pairs.jsonl), config digest, version

Columns follow Pick-a-Pic v2 / Diffusion-DPO where they can: `caption` (the prompt), `jpg_0`,
`jpg_1`, `label_0` (1.0 when jpg_0 is preferred), `label_1` (1 - label_0). Which image is jpg_0
is drawn per pair (derive_seed(seed, "export_pairs", prompt id)): both orders occur, as in
Pick-a-Pic. Unlike Pick-a-Pic v2's plain `binary` jpg_0/jpg_1, the images are the `datasets`
Image feature, the struct {"bytes": PNG bytes, "path": "<prompt id>-<k>.png"} (features/image.py
Image.pa_type), so the viewer shows them; Diffusion-DPO's train.py wants raw bytes: cast with
`Image(decode=False)` and pass `x["bytes"]`. Ours: prompt_id, category, model, margin; per side
(winner_, loser_) candidate, seed, vqa, clip, aesthetic, total; with the QA file, `qa`.

Checked against huggingface/datasets (src/datasets): schema metadata "huggingface" =
{"info": {"features": Features.to_dict()}} (arrow_writer.py _build_metadata; features.py
arrow_schema, from_arrow_schema: a feature is kept when its arrow field equals ours), defaults
left out (utils/py_utils.py asdict), lists in the JSON-list form every version reads; the card's
features in Features._to_yaml_list's form; file names per data_files.py SPLIT_PATTERN_SHARDED;
writer options as arrow_writer.py ParquetWriter (images uncompressed, PLAIN, no dictionary;
content-defined chunking; page index), row groups <= config.MAX_ROW_GROUP_SIZE (100MB).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import uuid
from pathlib import Path

from PIL import Image

from agfsync import __version__
from agfsync.core.ids import read_records, record_lines
from agfsync.core.io import DataError, atomic_open, sha256_file, write_json, write_text
from agfsync.core.pairs import SUBSCORES
from agfsync.core.seeds import derive_seed
from agfsync.core.shards import Shard

log = logging.getLogger(__name__)

DATASET = "results/{model}/pairs_dataset"  # the default output folder (agfsync export-pairs --out)
SPLIT = "train"
MAX_ROW_GROUP_BYTES = 100 * 10**6  # datasets config.MAX_ROW_GROUP_SIZE = "100MB"
CDC_OPTIONS = {"min_chunk_size": 256 * 1024, "max_chunk_size": 1024 * 1024, "norm_level": 0}  # DEFAULT_CDC_OPTIONS
SIDE_KEYS = ("candidate", "shard", "image", "seed", *SUBSCORES, "total")
QA_KEYS = ("question_id", "question", "choices", "answer", "element", "element_type")
IMAGE = {"_type": "Image"}


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def features(with_qa: bool = False) -> dict:
    """The columns as `datasets` Features.to_dict() writes them (defaults left out)."""
    cols = {"caption": _value("string"), "jpg_0": IMAGE, "jpg_1": IMAGE, "label_0": _value("float64"),
            "label_1": _value("float64"), "prompt_id": _value("string"), "category": _value("string"),
            "model": _value("string"), "margin": _value("float64")}
    for side in ("winner", "loser"):
        cols[f"{side}_candidate"] = _value("int64")
        cols[f"{side}_seed"] = _value("int64")
        cols.update({f"{side}_{key}": _value("float64") for key in (*SUBSCORES, "total")})
    if with_qa:  # a list of structs: a one-element JSON list, the form every datasets version reads
        cols["qa"] = [{key: [_value("string")] if key == "choices" else _value("string") for key in QA_KEYS}]
    return cols


def arrow_type(feature):
    """The arrow type `datasets` makes of a feature (features.py get_nested_type)."""
    import pyarrow as pa

    if isinstance(feature, list):
        return pa.list_(arrow_type(feature[0]))
    if feature.get("_type") == "Image":
        return pa.struct({"bytes": pa.binary(), "path": pa.string()})  # datasets Image.pa_type
    if feature.get("_type") == "Value":
        return {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64()}[feature["dtype"]]
    return pa.struct({name: arrow_type(sub) for name, sub in feature.items()})


def schema(cols: dict):
    """The parquet schema, with the "huggingface" metadata datasets writes and reads."""
    import pyarrow as pa

    metadata = {"huggingface": json.dumps({"info": {"features": cols}})}
    return pa.schema([pa.field(name, arrow_type(f)) for name, f in cols.items()], metadata=metadata)


def yaml_feature(feature) -> dict:
    """A feature in the card's YAML form (features.py Features._to_yaml_list)."""
    if isinstance(feature, list):
        inner = yaml_feature(feature[0])
        return {"list": inner.get("struct") or inner.get("dtype")}
    if feature.get("_type") == "Image":
        return {"dtype": "image"}
    if feature.get("_type") == "Value":
        return {"dtype": feature["dtype"]}
    return {"struct": [{"name": name, **yaml_feature(sub)} for name, sub in feature.items()]}


class _Images:
    """The candidate shards the pairs name, opened once each; PNG bytes by pair side."""

    def __init__(self, candidates_dir):
        self.dir = None if candidates_dir is None else Path(candidates_dir)
        self.open: dict[Path, tuple[Shard, dict]] = {}
        self.pretrained: set[str] = set()

    def png(self, side: dict, prompt_id: str, where: str) -> bytes:
        recorded = str(side["shard"])
        path = self.dir / Path(recorded).name if self.dir is not None else Path(recorded)
        if path not in self.open:
            if not path.is_file():
                raise DataError(f"{where}: prompt id {prompt_id!r}: candidate shard {path} is missing "
                                f"(recorded as {recorded})")
            shard = Shard(path)
            self.open[path] = (shard, {row.get("image"): row for row in shard.rows})
        shard, rows = self.open[path]
        row = rows.get(side["image"])
        record = f"prompt id {prompt_id!r} candidate {side['candidate']!r}"
        if row is None or row.get("prompt_id") != prompt_id or row.get("candidate") != side["candidate"]:
            raise DataError(f"shard {path}: no image {side['image']} of {record} in its manifest (listed at {where})")
        try:
            data = shard._read(side["image"], f"record {prompt_id}.{side['candidate']}: image")
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
                kind = image.format
        except DataError as err:
            raise DataError(f"{err} (listed at {where})") from None
        except Exception as err:  # PIL raises many types for corrupt data
            raise DataError(f"shard {path}, {record}: image {side['image']} is corrupt ({err})") from None
        if kind != "PNG":
            raise DataError(f"shard {path}, {record}: image {side['image']} is {kind}, not PNG")
        if row.get("pretrained"):
            self.pretrained.add(str(row["pretrained"]))
        return data

    def close(self) -> None:
        for shard, _ in self.open.values():
            shard.close()


def _number(side: dict, key: str, where: str, *, integer: bool = False):
    value = side.get(key)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or isinstance(value, bool):
        raise DataError(f"{where}: {key} {value!r} is not {'an integer' if integer else 'a finite number'}")
    return value if integer else float(value)


def _check(pair: dict, where: str) -> None:
    if not isinstance(pair["prompt"], str):
        raise DataError(f"{where}: prompt {pair['prompt']!r} is not text")
    _number(pair, "margin", where)
    for name in ("winner", "loser"):
        side = pair[name]
        if not isinstance(side, dict):
            raise DataError(f"{where}: {name} is not an object")
        missing = [key for key in SIDE_KEYS if key not in side]
        if missing:
            raise DataError(f"{where}: {name} lacks key(s) {', '.join(map(repr, missing))}")
        if not (isinstance(side["shard"], str) and isinstance(side["image"], str)):
            raise DataError(f"{where}: {name} shard {side['shard']!r} or image {side['image']!r} is not a path")
        _number(side, "candidate", f"{where}: {name}", integer=True)
        if side["seed"] is not None:
            _number(side, "seed", f"{where}: {name}", integer=True)
        for key in (*SUBSCORES, "total"):
            _number(side, key, f"{where}: {name}")


def _qa_items(record: dict) -> list[dict]:
    items = []
    for item in record.get("qa") or []:
        item = {key: item.get(key) for key in QA_KEYS} if isinstance(item, dict) else dict.fromkeys(QA_KEYS)
        choices = item["choices"]
        item["choices"] = [str(c) for c in choices] if isinstance(choices, list) else None
        items.append({k: v if k == "choices" or v is None else str(v) for k, v in item.items()})
    return items


def _read_qa(path, pairs: list[dict], wheres: list[str]) -> dict[str, dict]:
    records = {r["id"]: r for r in read_records(path, required=("id", "prompt"))}
    for pair, where in zip(pairs, wheres):
        record = records.get(pair["prompt_id"])
        if record is None:
            raise DataError(f"{where}: prompt id {pair['prompt_id']!r} is not a prompt of {path}")
        if record["prompt"] != pair["prompt"]:
            raise DataError(f"{where}: prompt id {pair['prompt_id']!r} has another prompt in {path}")
    return records


def _row(pair: dict, where: str, images: _Images, *, model: str, seed: int, qa: dict | None) -> dict:
    pid, winner, loser = pair["prompt_id"], pair["winner"], pair["loser"]
    flip = derive_seed(seed, "export_pairs", pid, bits=1) == 1  # jpg_0 is the loser
    first, second = (loser, winner) if flip else (winner, loser)
    row = {"caption": pair["prompt"]}
    for column, side in (("jpg_0", first), ("jpg_1", second)):
        row[column] = {"bytes": images.png(side, pid, where), "path": f"{pid}-{side['candidate']}.png"}
    row.update(label_0=0.0 if flip else 1.0, label_1=1.0 if flip else 0.0, prompt_id=pid,
               category=None if pair.get("category") is None else str(pair["category"]), model=model,
               margin=float(pair["margin"]))
    for name, side in (("winner", winner), ("loser", loser)):
        row[f"{name}_candidate"], row[f"{name}_seed"] = side["candidate"], side["seed"]
        row.update({f"{name}_{key}": float(side[key]) for key in (*SUBSCORES, "total")})
    if qa is not None:
        row["qa"] = _qa_items(qa[pid])
    return row


def _write_parquet(path: Path, arrow_schema, rows) -> tuple[int, int]:
    """Rows into one parquet file, row groups of at most MAX_ROW_GROUP_BYTES; (rows, arrow bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [f.name for f in arrow_schema if f.type == arrow_type(IMAGE)]
    others = [f.name for f in arrow_schema if f.name not in images]
    count = nbytes = 0
    with atomic_open(path, "wb") as handle, pq.ParquetWriter(
            handle, arrow_schema, compression={**dict.fromkeys(images, "none"), **dict.fromkeys(others, "snappy")},
            use_dictionary=others, column_encoding=dict.fromkeys(images, "PLAIN"), write_page_index=True,
            use_content_defined_chunking=CDC_OPTIONS, store_schema=True) as writer:
        writer.add_key_value_metadata({"content_defined_chunking": json.dumps(CDC_OPTIONS)})
        buffer, size = [], 0

        def flush():
            nonlocal nbytes
            table = pa.Table.from_pylist(buffer, schema=arrow_schema)
            writer.write_table(table, row_group_size=len(buffer))
            nbytes += table.nbytes
            buffer.clear()

        for row in rows:
            buffer.append(row)
            count += 1
            size += sum(len(row[c]["bytes"]) for c in images) + len(row["caption"]) + 256
            if size >= MAX_ROW_GROUP_BYTES:
                flush()
                size = 0
        if buffer:
            flush()
    return count, nbytes


def _card(cols: dict, *, model: str, rows: int, nbytes: int, download: int, seed: int, label_ones: int,
          pretrained: list[str], config_digest: str | None, with_qa: bool) -> str:
    import yaml

    front = {
        "pretty_name": f"AGFSync preference pairs ({model})",
        "task_categories": ["text-to-image"],
        "tags": ["agfsync", "preference", "dpo", "diffusion-dpo", "ai-feedback", "synthetic"],
        "configs": [{"config_name": "default", "data_files": [{"split": SPLIT, "path": f"data/{SPLIT}-*"}]}],
        "dataset_info": {
            "features": [{"name": name, **yaml_feature(f)} for name, f in cols.items()],
            "splits": [{"name": SPLIT, "num_bytes": nbytes, "num_examples": rows}],
            "download_size": download, "dataset_size": nbytes,
        },
    }
    made_by = ", ".join(f"`{p}`" for p in pretrained) or f"the `{model}` model of the config"
    qa_line = ("| `qa` | the TIFA-style questions (question_id, question, choices, answer, element, element_type) "
               "the VQA score asked |\n") if with_qa else ""
    return f"""---
{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---

# AGFSync preference pairs: {model}

{rows} preference pairs written by agfsync (`agfsync export-pairs`, version
{__version__}{f", config digest `{config_digest}`" if config_digest else ""}): for each prompt the model `{model}`
({made_by}) drew several candidates, AI feedback scored each (VQA, CLIP, aesthetic; AGFSync, An et al.,
AAAI 2025), and the pair is the best vs the worst candidate by the weighted total.

## Columns

The layout of Pick-a-Pic v2, as Diffusion-DPO reads it: `caption`, `jpg_0`, `jpg_1`, `label_0`, `label_1`.

| column | meaning |
|---|---|
| `caption` | the prompt |
| `jpg_0`, `jpg_1` | the two images (PNG; `datasets` Image feature: struct of `bytes` and `path`) |
| `label_0` | 1.0 when `jpg_0` is the preferred (winner) image, else 0.0; `label_1` = 1 - `label_0` |
| `prompt_id`, `category`, `model` | the prompt's id and category, the generating model's name in the config |
| `margin` | winner total - loser total |
| `winner_candidate`, `loser_candidate` | the candidate index of each image among the prompt's candidates |
| `winner_seed`, `loser_seed` | the initial-latent seed of each image |
| `winner_vqa`, `winner_clip`, `winner_aesthetic`, `winner_total` (and `loser_*`) | the sub-scores (0-100) and their weighted total |
{qa_line}
**Order.** Which image is `jpg_0` is drawn per pair from the prompt id (seed {seed}), so both orders
occur, as in Pick-a-Pic: here `label_0` is 1.0 in {label_ones} of the {rows} rows. The image `path`
is `<prompt_id>-<candidate>.png`.

**Images.** Pick-a-Pic v2 stores `jpg_0`/`jpg_1` as plain bytes; here they are Image features, so
the viewer shows them and `datasets` returns PIL images. Diffusion-DPO's `train.py` calls
`Image.open(io.BytesIO(x))`: cast with `ds.cast_column("jpg_0", datasets.Image(decode=False))` (and
`jpg_1`) and pass `x["bytes"]`.

## Loading

```python
from datasets import load_dataset

ds = load_dataset("parquet", data_dir="path/to/this/folder", split="train")  # or load_dataset("path/to/this/folder")
ds.push_to_hub("user/agfsync-pairs")  # or upload the folder as is: hf upload user/agfsync-pairs . --repo-type dataset
```

The images were generated by {made_by}: check that model's license before redistributing them.
"""


def _replace(tmp: Path, out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() or out_dir.is_symlink():
        if not overwrite:
            raise DataError(f"{out_dir} exists; pass --overwrite (overwrite=True) to replace it")
        old = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.old")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    else:
        os.replace(tmp, out_dir)


def export_pairs(pairs_path, candidates_dir, out_dir, *, model: str, prompts_qa_path=None, shard_rows: int = 500,
                 config_digest: str | None = None, seed: int = 0, overwrite: bool = False) -> dict:
    """The pairs of `pairs_path` (stage 4) with their images, read from the candidate shards
    (each pair side's shard file name looked up in `candidates_dir`; None: the path the pair
    records), as a Hugging Face dataset folder `out_dir` (built in a sibling temporary folder,
    then renamed). Refuses an existing `out_dir` unless `overwrite`. `seed` draws each pair's
    order. With `prompts_qa_path` (results/prompts/qa.jsonl) a `qa` column. Returns export.json."""
    pairs_path, out_dir = Path(pairs_path), Path(out_dir)
    if shard_rows < 1:
        raise ValueError(f"shard_rows must be >= 1, got {shard_rows}")
    if (out_dir.exists() or out_dir.is_symlink()) and not overwrite:
        raise DataError(f"{out_dir} exists; pass --overwrite (overwrite=True) to replace it")
    pairs = read_records(pairs_path, required=("prompt_id", "prompt", "winner", "loser", "margin"), key="prompt_id")
    wheres = [f"{pairs_path}, line {n}" for n in record_lines(pairs_path)]
    if not pairs:
        raise DataError(f"{pairs_path}: no preference pairs (the file is empty); there is nothing to export")
    for pair, where in zip(pairs, wheres):
        _check(pair, where)
    qa = _read_qa(prompts_qa_path, pairs, wheres) if prompts_qa_path is not None else None
    cols = features(qa is not None)
    arrow_schema = schema(cols)
    num_files = math.ceil(len(pairs) / shard_rows)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.{uuid.uuid4().hex}.tmp")
    tmp.mkdir()
    images = _Images(candidates_dir)
    try:
        files, nbytes = [], 0
        for index in range(num_files):
            part = slice(index * shard_rows, (index + 1) * shard_rows)
            name = f"data/{SPLIT}-{index:05d}-of-{num_files:05d}.parquet"
            rows = (_row(p, w, images, model=model, seed=seed, qa=qa) for p, w in zip(pairs[part], wheres[part]))
            count, size = _write_parquet(tmp / name, arrow_schema, rows)
            nbytes += size
            files.append({"path": name, "rows": count, "bytes": (tmp / name).stat().st_size,
                          "sha256": sha256_file(tmp / name)})
            log.info("export-pairs: %s: %d pairs", name, count)
        label_ones = sum(derive_seed(seed, "export_pairs", p["prompt_id"], bits=1) == 0 for p in pairs)
        pretrained = sorted(images.pretrained)
        summary = {
            "what": "the preference pairs as a Hugging Face dataset (agfsync export-pairs)",
            "agfsync_version": __version__, "model": model, "config_digest": config_digest,
            "rows": len(pairs), "label_0_ones": label_ones, "order_seed": seed, "shard_rows": shard_rows,
            "files": files, "columns": list(cols), "pretrained": pretrained,
            "sources": {
                "pairs": {"path": str(pairs_path), "sha256": sha256_file(pairs_path), "records": len(pairs)},
                "candidates_dir": None if candidates_dir is None else str(candidates_dir),
                "shards": sorted(str(p) for p in images.open),
                "qa": None if qa is None else {"path": str(prompts_qa_path), "sha256": sha256_file(prompts_qa_path)},
            },
        }
        write_text(tmp / "README.md", _card(
            cols, model=model, rows=len(pairs), nbytes=nbytes, download=sum(f["bytes"] for f in files), seed=seed,
            label_ones=label_ones, pretrained=pretrained, config_digest=config_digest, with_qa=qa is not None))
        write_json(tmp / "export.json", summary)
        _replace(tmp, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        images.close()
    log.info("export-pairs: %d pairs in %d parquet file(s) under %s", len(pairs), num_files, out_dir)
    return summary
