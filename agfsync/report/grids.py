"""The report's image grids (pure: PIL, shards; no torch).

  change_grid      base vs AGFSync on the same prompt and seed, for the prompts where the
                   per-image accuracy (the oracle's gold_correct, else TIFA's VQA `correct`)
                   rose most and fell most, with the verdict on every question
  samples_grid     base vs AGFSync for the first prompts of the other benchmarks (HPS v2, MJHQ)
  candidates_grid  all N candidates of a few training prompts with their three sub-scores and
                   the weighted total, winner and loser marked

Images are embedded as data URLs at IMAGE_SIZE px: a smaller image (the world's 64 px) is
upscaled with Lanczos and kept lossless (PNG), a larger one is reduced to it (JPEG).
"""

from __future__ import annotations

import base64
import contextlib
import io
from html import escape
from pathlib import Path

from PIL import Image

from agfsync.core.benchmarks import NAMES
from agfsync.core.io import read_jsonl
from agfsync.core.pairs import SUBSCORES, weighted_total
from agfsync.core.shards import Shard
from agfsync.report.data import ModelData

IMAGE_SIZE = 192
CHANGES = 6      # prompts with the largest gains, and as many with the largest losses
CANDIDATE_PROMPTS = 3
SAMPLES = 4
MARK = {True: '<span class="ok">&#10003;</span>', False: '<span class="bad">&#10007;</span>', None: "-"}


def image_data_url(image: Image.Image, size: int = IMAGE_SIZE) -> str:
    image = image.convert("RGB")
    side = max(image.size)
    if side < size:
        factor = size / side
        image = image.resize((round(image.width * factor), round(image.height * factor)), Image.Resampling.LANCZOS)
    elif side > size:
        image = image.copy()
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if side <= size:
        image.save(buffer, format="PNG", compress_level=9)
        kind = "png"
    else:
        image.save(buffer, format="JPEG", quality=85)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: Image.Image, alt: str) -> str:
    return f'<img alt="{escape(alt)}" width="{IMAGE_SIZE}" height="{IMAGE_SIZE}" src="{image_data_url(image)}">'


def _accuracy(row: dict, key: str) -> float:
    return sum(map(bool, row[key])) / len(row[key])


def biggest_changes(per_image: dict[str, dict[str, dict]], key: str,
                    count: int = CHANGES) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(gains, losses): up to `count` prompt ids with the largest rise and the largest fall of
    the per-image accuracy over `key`, AGFSync - base (ties: by prompt id)."""
    base, tuned = per_image["base"], per_image["agfsync"]
    deltas = [(pid, _accuracy(tuned[pid], key) - _accuracy(base[pid], key)) for pid in sorted(base)
              if pid in tuned and base[pid].get(key) and tuned[pid].get(key)]
    gains = sorted((d for d in deltas if d[1] > 0), key=lambda d: (-d[1], d[0]))[:count]
    losses = sorted((d for d in deltas if d[1] < 0), key=lambda d: (d[1], d[0]))[:count]
    return gains, losses


class ShardImages(contextlib.ExitStack):
    """Images by prompt id over a list of shards (opened once, closed on exit)."""

    def __init__(self, paths):
        super().__init__()
        self.rows: dict[str, tuple[Shard, dict]] = {}
        self.paths = [Path(p) for p in paths]

    def __enter__(self):
        super().__enter__()
        for path in self.paths:
            if path.exists():
                shard = self.enter_context(Shard(path))
                for row in shard.rows:
                    self.rows.setdefault(row["prompt_id"], (shard, row))
        return self

    def get(self, prompt_id: str):
        found = self.rows.get(prompt_id)
        return (found[0].image(found[1]), found[1]) if found else (None, None)


def _questions(record: dict | None, base: dict, tuned: dict, key: str) -> str:
    qa = (record or {}).get("qa") or [{"question": t, "answer": ""} for t in base.get("element_types", [])]
    rows = []
    for i, q in enumerate(qa):
        b = bool(base[key][i]) if i < len(base[key]) else None
        t = bool(tuned[key][i]) if i < len(tuned[key]) else None
        rows.append(f"<tr><td class=\"left\">{escape(q['question'])}</td><td>{escape(str(q.get('answer', '')))}</td>"
                    f"<td>{MARK[b]}</td><td>{MARK[t]}</td></tr>")
    return (f'<table class="qa"><tr><th>Question</th><th>Expected</th><th>Base</th><th>AGFSync</th></tr>'
            f'{"".join(rows)}</table>')


def _change_figure(data: ModelData, pid: str, delta: float, key: str, images: dict[str, ShardImages]) -> str:
    base_row, tuned_row = data.per_image["base"][pid], data.per_image["agfsync"][pid]
    (base_img, meta), (tuned_img, _) = images["base"].get(pid), images["agfsync"].get(pid)
    record = data.prompts.get(pid)
    prompt = (record or {}).get("prompt") or (meta or {}).get("prompt", "")
    parts = [p for p in ((record or {}).get("group") or base_row.get("group"), base_row.get("split")) if p]
    pictures = "".join(f'<div>{_img(img, f"{name} image of {pid}")}<br>{name}</div>' if img is not None else
                       f'<div class="note">{name}: image missing</div>'
                       for name, img in (("Base", base_img), ("AGFSync", tuned_img)))
    who = "oracle" if key == "gold_correct" else "VQA judge"
    score = (f"{sum(map(bool, base_row[key]))}/{len(base_row[key])} &rarr; {sum(map(bool, tuned_row[key]))}/"
             f"{len(tuned_row[key])} correct ({who}, {100 * delta:+.0f} points)")
    return (f'<figure class="change"><div class="pair">{pictures}</div><figcaption><b>{escape(prompt)}</b><br>'
            f'{escape(pid)}{" (" + escape(", ".join(parts)) + ")" if parts else ""}, seed {base_row.get("seed", "?")}: '
            f'{score}{_questions(record, base_row, tuned_row, key)}</figcaption></figure>')


def change_grid(model: str, data: ModelData, count: int = CHANGES) -> str:
    key = data.accuracy_key()
    if key is None:
        return '<p class="note">No per-image TIFA scores: no base-vs-AGFSync examples.</p>'
    gains, losses = biggest_changes(data.per_image, key, count)
    what = "gold accuracy (the oracle's verdicts)" if key == "gold_correct" else "TIFA score (the VQA judge's verdicts)"
    out = []
    with ShardImages(data.tifa_shards.get("base", [])) as base, ShardImages(data.tifa_shards.get("agfsync", [])) as tuned:
        images = {"base": base, "agfsync": tuned}
        for title, items, ident in ((f"Largest gains in {what}", gains, "gains"),
                                    (f"Largest losses in {what}", losses, "losses")):
            figures = "".join(_change_figure(data, pid, delta, key, images) for pid, delta in items)
            body = f'<div class="grid wide">{figures}</div>' if figures else '<p class="note">None.</p>'
            out.append(f'<h4 id="{ident}-{escape(model)}">{escape(title)} ({len(items)})</h4>{body}')
    return "".join(out) + ('<p class="note">Same prompt and seed for both models; &#10003; the answer read from the '
                           'image equals the expected one, &#10007; it does not (for the oracle, also when it cannot '
                           'read the attribute).</p>')


def samples_grid(data: ModelData, per_bench: int = SAMPLES, skip=("tifa",)) -> str:
    """Base vs AGFSync for the first prompts of each other benchmark's first shard."""
    figures = []
    for bench, paths in data.eval_shards.items():
        if bench in skip or not all(Path(p).exists() for p in paths.values()):
            continue
        with Shard(paths["base"]) as base, Shard(paths["agfsync"]) as tuned:
            tuned_rows = {r["prompt_id"]: r for r in tuned.rows}
            for row in base.rows[:per_bench]:
                other = tuned_rows.get(row["prompt_id"])
                if other is None:
                    continue
                figures.append(
                    f'<figure><div class="pair"><div>{_img(base.image(row), "base")}<br>Base</div><div>'
                    f'{_img(tuned.image(other), "agfsync")}<br>AGFSync</div></div><figcaption><b>'
                    f'{escape(NAMES.get(bench, bench))}</b> {escape(row["prompt_id"])}, seed {row["seed"]}: '
                    f'{escape(row.get("prompt", ""))}</figcaption></figure>')
    return f'<h4>Samples of the other benchmarks</h4><div class="grid wide">{"".join(figures)}</div>' if figures else ""


def _pick_pairs(pairs: list[dict], count: int) -> list[dict]:
    """The first pair of each category in file order (then the next ones), `count` in all."""
    seen, first, rest = set(), [], []
    for pair in pairs:
        (rest if pair.get("category") in seen else first).append(pair)
        seen.add(pair.get("category"))
    return (first + rest)[:count]


def _shard_key(path: str) -> str:
    return Path(path).name.removeprefix("shard-").split(".")[0]


def candidates_grid(model: str, data: ModelData, count: int = CANDIDATE_PROMPTS) -> str:
    if not data.pairs:
        return '<p class="note">No training pairs.</p>'
    weights = (data.pairs_summary or {}).get("weights")
    out = []
    for pair in _pick_pairs(data.pairs, count):
        key = _shard_key(pair["winner"]["shard"])
        path = data.candidate_shards.get(key) or Path(pair["winner"]["shard"])
        scores_path = data.score_shards.get(key)
        scores = {}
        if scores_path is not None and scores_path.exists():
            scores = {r["candidate"]: r for r in read_jsonl(scores_path, required=("prompt_id", "candidate"))
                      if r["prompt_id"] == pair["prompt_id"]}
        if not path.exists():
            out.append(f'<p class="note">{escape(pair["prompt_id"])}: candidate shard {escape(str(path))} missing.</p>')
            continue
        with Shard(path) as shard:
            rows = shard.by_prompt().get(pair["prompt_id"], [])
            totals = {r["candidate"]: weighted_total(scores[r["candidate"]], weights) for r in rows
                      if weights and r["candidate"] in scores and all(k in scores[r["candidate"]] for k in SUBSCORES)}
            rows = sorted(rows, key=lambda r: (-totals.get(r["candidate"], float("-inf")), r["candidate"]))
            cells = []
            for row in rows:
                k = row["candidate"]
                role = "winner" if k == pair["winner"]["candidate"] else "loser" if k == pair["loser"]["candidate"] else ""
                s = scores.get(k, {})
                subs = " &middot; ".join(f"{name} {s[name]:.1f}" for name in SUBSCORES if name in s)
                total = f"total <b>{totals[k]:.2f}</b>" if k in totals else ""
                badge = f'<span class="badge {role}">{role}</span> ' if role else ""
                cells.append(f'<div class="cand {role}">{_img(shard.image(row), f"candidate {k}")}<br>{badge}'
                             f'#{k} {total}<br><small>{subs}</small></div>')
        out.append(f'<figure class="cands"><figcaption><b>{escape(pair["prompt"])}</b> ({escape(pair["prompt_id"])}, '
                   f'{escape(str(pair.get("category")))}; margin {pair["margin"]:.2f})</figcaption>'
                   f'<div class="row">{"".join(cells)}</div></figure>')
    wsum = ", ".join(f"{k} {v}" for k, v in (weights or {}).items())
    return (f'<div id="pairs-images-{escape(model)}">{"".join(out)}</div><p class="note">Sorted by the weighted '
            f'total ({escape(wsum)}) of the sub-scores (VQA, CLIP, aesthetic; 0-100); the pair is the best (winner) '
            f'and the worst (loser) candidate.</p>')
