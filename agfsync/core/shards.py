"""Shards: how candidates are stored (rules candidates_generate, candidates_score,
pairs_select). Pure: numpy and PIL, no torch.

Prompts are split into fixed-size shards by their position in results/prompts/qa.jsonl.
The number of shards is known when the workflow is parsed (categories x per_category /
shard_size), so the DAG is static and `snakemake -n` lists every shard job; trailing
shards are empty when the QA stage dropped prompts.

A shard is ONE tar file (never one file per image), written atomically:
    manifest.jsonl                       one row per image (prompt id, candidate, seeds, settings)
    images/<prompt_id>.<k>.png           lossless
    latents/<prompt_id>.<k>.npy          final latents, float16 (candidates.keep_latents)
The manifest is written first, so a reader learns the contents without scanning.
Member names come from prompt ids, which are checked (agfsync.core.ids) where the records are
read, again where a member name is made, and again for every manifest row a reader sees.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from agfsync.core.categories import CATEGORIES
from agfsync.core.ids import check_id, check_ids
from agfsync.core.io import DataError, atomic_open, decode_line

MANIFEST = "manifest.jsonl"
PNG_COMPRESS_LEVEL = 1  # lossless either way; level 1 encodes ~5x faster than the default 6


def num_shards(cfg: dict) -> int:
    """Shards of the candidate stage: an upper bound on prompts / shard_size, known at parse time."""

    num_categories = len(cfg["prompts"].get("categories") or CATEGORIES)
    return max(1, math.ceil(num_categories * cfg["prompts"]["per_category"] / cfg["candidates"]["shard_size"]))


def shard_name(index: int) -> str:
    return f"{index:05d}"


def shard_records(records: list[dict], index: int, shard_size: int, source: str = "records") -> list[dict]:
    """Shard `index` of the records. Every record's id is checked first, and unique across
    ALL records (a duplicate in another shard would collide in the pairs): DataError naming
    `source` (the file the records came from), the record number and the id. Stages read
    their input with agfsync.core.ids.read_records, which names the line instead."""
    check_ids(records, str(source), (f"record {number}" for number in range(1, len(records) + 1)))
    return records[index * shard_size : (index + 1) * shard_size]


def _member_stem(prompt_id: str, candidate: int) -> str:
    """`<prompt id>.<candidate>`, both checked again here (defence in depth): a tar member name
    can never hold '/', '..' or anything else than agfsync.core.ids allows."""
    check_id(prompt_id, "shard member")
    if not isinstance(candidate, int) or isinstance(candidate, bool) or candidate < 0:
        raise DataError(f"shard member of prompt id {prompt_id!r}: candidate {candidate!r} is not an index >= 0")
    return f"{prompt_id}.{candidate}"


def image_member(prompt_id: str, candidate: int) -> str:
    return f"images/{_member_stem(prompt_id, candidate)}.png"


def latent_member(prompt_id: str, candidate: int) -> str:
    return f"latents/{_member_stem(prompt_id, candidate)}.npy"


def encode_png(image_HWC: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_HWC).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # byte-identical shards for identical contents
    tar.addfile(info, io.BytesIO(data))


def write_shard(path: str | os.PathLike, rows: list[dict], members: Iterable[tuple[str, bytes]]) -> None:
    """Write a shard atomically: the manifest rows, then the members (name, bytes)."""
    manifest = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows).encode()
    with atomic_open(path, "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, manifest)
            for name, data in members:
                _add(tar, name, data)


class Shard:
    """Read access to one shard; every error names the shard file and the record."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"shard {self.path}: file missing (was candidate generation run for it?)")
        try:
            self._tar = tarfile.open(self.path, mode="r")
            self._members = {m.name: m for m in self._tar.getmembers()}
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(f"shard {self.path}: not a readable tar file ({err}); delete it and regenerate") from None
        if MANIFEST not in self._members:
            raise DataError(f"shard {self.path}: no {MANIFEST} (not an agfsync shard, or written incompletely)")
        data = self._read(MANIFEST, "the manifest")
        self.rows = []
        for lineno, raw in enumerate(data.splitlines(), start=1):
            where = f"shard {self.path}: {MANIFEST} line {lineno}"
            try:
                row = json.loads(decode_line(raw, where))
            except json.JSONDecodeError:
                raise DataError(f"{where} is not valid JSON") from None
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
            check_id(row.get("prompt_id"), where)  # its members were named after it
            self.rows.append(row)

    def close(self) -> None:
        self._tar.close()

    def __enter__(self) -> Shard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, name: str, what: str) -> bytes:
        member = self._members.get(name)
        if member is None:
            raise DataError(f"shard {self.path}: {what} ({name}) is missing")
        try:
            handle = self._tar.extractfile(member)
            data = handle.read() if handle is not None else None
        except (tarfile.TarError, EOFError, OSError) as err:
            raise DataError(f"shard {self.path}: {what} ({name}) cannot be read ({err})") from None
        if data is None or len(data) != member.size:
            raise DataError(f"shard {self.path}: {what} ({name}) is truncated")
        return data

    def image(self, row: dict) -> Image.Image:
        record = f"record {row['prompt_id']}.{row['candidate']}"
        data = self._read(row["image"], f"{record}: image")
        try:
            image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as err:  # PIL raises many types for corrupt data
            raise DataError(f"shard {self.path}, {record}: image {row['image']} is corrupt ({err})") from None
        return image.convert("RGB")

    def latent(self, row: dict) -> np.ndarray:
        if not row.get("latent"):
            raise DataError(f"shard {self.path}, record {row['prompt_id']}.{row['candidate']}: no latent was kept")
        data = self._read(row["latent"], f"record {row['prompt_id']}.{row['candidate']}: latent")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def by_prompt(self) -> dict[str, list[dict]]:
        groups: dict[str, list[dict]] = {}
        for row in self.rows:
            groups.setdefault(row["prompt_id"], []).append(row)
        for rows in groups.values():
            rows.sort(key=lambda r: r["candidate"])
        return groups
