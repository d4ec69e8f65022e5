"""`agfsync generate`: images from the base or the fine-tuned model, with our seeds, as PNGs
and a grid: for a prompt, a prompts file or an evaluation benchmark's prompt list.

The draw is the evaluation's (agfsync.stages.evaluate.generate_eval_shard): one clean
image per prompt and seed, no embedding noise, seeds from (seed, "eval", SCOPE) and the
prompt id, the evaluation's batches (eval.prompts_per_batch prompts, restarting at every
eval.shard_size). With a benchmark (SCOPE = its name) and one image per prompt, the images
are the evaluation's, bit for bit (on the same machine and thread count). Images 2..N of a
prompt are further draws of the same scheme (candidate k's seeds); with N > 1 every UNet
call holds N times the images, so the first image is the evaluation's draw up to the last
bits of its float sums. Prompts given by hand use the scope "generate".

Writes OUT/<variant>/<prompt id>-<k>.png, OUT/<variant>/images.jsonl (id, prompt, k, seeds,
file) and OUT/grid.png (rows: prompts; columns: the images of each variant side by side).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

from agfsync.core.io import DataError, atomic_open, read_jsonl, write_jsonl
from agfsync.core.sections import Settings
from agfsync.core.shards import encode_png

log = logging.getLogger(__name__)

GRID_ROWS = 16  # prompts shown in grid.png (every image is written as a PNG)


def prompt_records(prompts: Sequence[str]) -> list[dict]:
    """Records for prompts typed by hand: ids from their text (`p-<10 hex of sha1>`), stable and path-safe."""
    return [{"id": "p-" + hashlib.sha1(p.encode("utf-8")).hexdigest()[:10], "prompt": p} for p in prompts]


def file_records(path: str | Path) -> list[dict]:
    """A prompts file: JSONL records with `prompt` (and `id`, else one from the text), or plain
    text, one prompt per line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such prompts file")
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("{"):  # ids are checked by draw(), after the missing ones are made
        records = read_jsonl(path, required=("prompt",))
        return [{"id": r.get("id") or prompt_records([r["prompt"]])[0]["id"], "prompt": r["prompt"]} for r in records]
    return prompt_records([line.strip() for line in text.splitlines() if line.strip()])


def draw(settings: Settings, model_name: str, records: list[dict], out_dir: str | Path, *,
         variants: dict[str, str | None], scope: str = "generate", per_prompt: int = 1,
         progress: bool = True) -> dict:
    """Every variant's images of `records` (variant name -> fine-tuned UNet folder, None for the
    base model) into out_dir; returns {variant: [manifest rows]}."""
    from agfsync.core.ids import check_ids
    from agfsync.stages.evaluate import eval_generator

    if model_name not in settings.models:
        raise DataError(f"model {model_name!r} is not in the config's models ({', '.join(settings.models)})")
    if not records:
        raise DataError("no prompt to draw")
    check_ids(records, "generate", (f"prompt {n}" for n in range(1, len(records) + 1)))
    out_dir = Path(out_dir)
    # the evaluation's batches: eval.prompts_per_batch prompts, restarting at every shard of
    # eval.shard_size prompts (the batch makes up the float sums, so the images' last bits)
    shard, batch = settings.eval.shard_size, settings.eval.prompts_per_batch
    starts = [(s, min(s + batch, len(records), (s // shard + 1) * shard))
              for first in range(0, len(records), shard) for s in range(first, min(first + shard, len(records)), batch)]
    written = {}
    for variant, unet in variants.items():
        if unet is not None and not Path(unet).is_dir():
            raise DataError(f"variant {variant}: {unet}: no fine-tuned UNet folder (train the model first: "
                            f"snakemake results/{model_name}/agfsync)")
        generator = eval_generator(settings, model_name, scope, unet=unet, per_prompt=per_prompt)
        rows = []
        for start, stop in _progress(starts, f"generate {model_name} {variant}", progress):
            chunk = [{"id": r["id"], "prompt": r["prompt"], "category": r.get("group", "generate")}
                     for r in records[start:stop]]
            batch_rows, images, _ = generator.generate(chunk)
            for row, image in zip(batch_rows, images):
                name = f"{row['prompt_id']}-{row['candidate']}.png"  # ids are checked: path-safe
                _write(out_dir / variant / name, encode_png(image))
                rows.append({"prompt_id": row["prompt_id"], "prompt": row["prompt"], "k": row["candidate"],
                             "variant": variant, "unet": unet, "scope": scope, "seed": row["seed"],
                             "noise_seed": row["noise_seed"], "sampler_seed": row["sampler_seed"],
                             "file": f"{variant}/{name}"})
        del generator  # one pipeline in memory at a time
        write_jsonl(out_dir / variant / "images.jsonl", rows)
        written[variant] = rows
        log.info("generate: %d images of %s (%s) in %s", len(rows), model_name, variant, out_dir / variant)
    grid(out_dir, written)
    return written


def grid(out_dir: Path, written: dict[str, list[dict]]) -> Path:
    """OUT/grid.png: one row per prompt (the first GRID_ROWS), each variant's images side by side."""
    from PIL import Image

    variants = list(written)
    prompts = list(dict.fromkeys(r["prompt_id"] for r in written[variants[0]]))[:GRID_ROWS]
    cells = {(r["variant"], r["prompt_id"], r["k"]): r["file"] for rows in written.values() for r in rows}
    per = max(r["k"] for r in written[variants[0]]) + 1
    first = Image.open(out_dir / written[variants[0]][0]["file"])
    w, h = first.size
    gap = max(2, w // 32)
    canvas = Image.new("RGB", (len(variants) * per * w + (len(variants) - 1) * gap, len(prompts) * h), "white")
    for row, pid in enumerate(prompts):
        for v, variant in enumerate(variants):
            for k in range(per):
                with Image.open(out_dir / cells[(variant, pid, k)]) as image:
                    canvas.paste(image.convert("RGB"), ((v * per + k) * w + v * gap, row * h))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    _write(out_dir / "grid.png", buffer.getvalue())
    return out_dir / "grid.png"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb", encoding=None) as handle:
        handle.write(data)


def _progress(items, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="batch", disable=not enabled, mininterval=2)
