"""Record ids (pure, no torch): one rule, checked where records enter each stage.

A prompt id names tar members (images/<id>.<k>.png), seeds (agfsync.core.seeds) and rows of
every later file, so it must be safe as a file-name component and unique within its file:
  - 1 to 128 characters: ASCII letters, digits, '_', '.', '-'; the first a letter or a digit
    (no hidden '.x' names, nothing an option parser takes for a flag, no '/', no spaces,
    no control characters);
  - no '..' (never a path component that climbs, not even inside a tar member name);
  - at least one letter: an id is a name, not a number. All-digit ids ('17', '007') turn
    into numbers in YAML, CSV and spreadsheet round trips (losing leading zeros), and
    `images/17.0.png` reads as a float. Every legitimate id has a letter: the prompts
    stage writes '<category slug>-<10 hex>' ('animals-1a2b3c4d5e'), TIFA 'coco_301091',
    HPS v2 'anime-000', MJHQ-30K 40-hex hashes (all-digit with probability (10/16)^40);
  - a JSON string (never a number: 17 and "17" would derive the same seeds).
Errors are DataError naming the file, the line (or record) and the id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from agfsync.core.io import DataError, read_jsonl

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
_ID = re.compile(ID_PATTERN)
ID_RULE = (f"ids must match {ID_PATTERN}, contain a letter and no '..': they name files, tar members and seeds")


def id_problem(value) -> str | None:
    """Why `value` is not a valid record id, or None when it is."""
    if not isinstance(value, str):
        return f"is not a string (got {type(value).__name__})"
    if not _ID.fullmatch(value):  # fullmatch: '$' would also accept a trailing newline
        return "is not a safe identifier"
    if ".." in value:
        return "contains '..'"
    if not any(c.isascii() and c.isalpha() for c in value):
        return "has no letter (an id is a name, not a number)"
    return None


def check_id(value, where: str, what: str = "prompt id") -> str:
    """`value` when it is a valid id; DataError "<where>: <what> <value!r> <problem> (<rule>)" otherwise."""
    problem = id_problem(value)
    if problem is not None:
        shown = repr(value)  # repr: control characters and NULs are escaped, never printed raw
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise DataError(f"{where}: {what} {shown} {problem} ({ID_RULE})")
    return value


def check_ids(records: Iterable[dict], source: str, labels: Iterable[str], *, key: str = "id",
              what: str = "prompt id") -> None:
    """Every record's `key` is a valid id and no id appears twice. Errors name `source` (the
    file) and the record's label ("line 7", "record 3"; `labels` in the order of `records`)."""
    first: dict[str, str] = {}
    for record, label in zip(records, labels):
        value = check_id(record.get(key) if isinstance(record, dict) else None, f"{source}, {label}", what)
        if value in first:
            raise DataError(f"{source}, {label}: duplicate {what} {value!r} (first at {first[value]})")
        first[value] = label


def record_lines(path: str | os.PathLike) -> list[int]:
    """Line numbers (1-based) of the non-blank lines of a JSONL file: the lines read_jsonl
    turns into records, in order."""
    with open(path, "rb") as handle:
        return [number for number, raw in enumerate(handle, start=1) if raw.strip()]


def read_records(path: str | os.PathLike, *, required: Iterable[str] = ("id",), key: str = "id",
                 what: str = "prompt id") -> list[dict]:
    """The records of a stage's JSONL input (agfsync.core.io.read_jsonl: strict UTF-8, errors naming
    file and line), each id checked and unique; errors name the file, line and id."""
    records = read_jsonl(path, required=required)
    lines = record_lines(path)
    check_ids(records, str(Path(path)), (f"line {number}" for number in lines), key=key, what=what)
    return records
