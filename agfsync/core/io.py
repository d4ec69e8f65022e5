"""File helpers used by every stage (pure, no torch): atomic writes, append-only JSONL,
and JSONL reading with errors that name the file and line.

Writes go to a temporary file in the destination's directory, are flushed and fsynced,
then renamed over the destination: a reader (or Snakemake after a crash) sees either the
old file or the complete new one, never a partial one.

Append-only files (the LLM response caches, training metrics) are written with
`append_jsonl` only. A crash or a full disk can leave a torn last line (no newline, not
valid JSON): `append_jsonl` cuts it before appending, and `read_jsonl(torn_tail="skip")`
skips it; both warn naming the file and the byte offset. A torn tail can therefore never
swallow the next record or make a resume fail.

Decoding is one boundary: `read_jsonl` decodes each line as strict UTF-8 and rejects lone
surrogates, naming file and line. JSON writers refuse NaN and infinities (not JSON),
naming the file and the key.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad input data; the message names the file and the record."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    binary = "b" in mode
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions (shared clusters)
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def non_finite_key(obj: Any, where: str = "") -> str | None:
    """The dotted key of the first NaN or infinity in a JSON-like object, else None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top level)"
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = ((f"[{i}]", value) for i, value in enumerate(obj))
    else:
        return None
    for key, value in items:
        key = str(key)
        found = non_finite_key(value, where + key if key.startswith("[") else (f"{where}.{key}" if where else key))
        if found:
            return found
    return None


def dumps_record(obj: Any, path: str | os.PathLike, **kwargs) -> str:
    """json.dumps for files: never writes NaN/Infinity (not JSON) nor a lone surrogate
    (not UTF-8); the error names the file and the key."""
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError as err:
        key = non_finite_key(obj)
        if key is None:
            raise
        raise DataError(f"{path}: refusing to write a non-finite number at key {key!r} (NaN and "
                        f"infinity are not JSON)") from err
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError(f"{path}: refusing to write text that is not valid Unicode (a lone surrogate at "
                        f"character {err.start})") from None
    return text


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = dumps_record(obj, path, indent=2, sort_keys=False)
    with atomic_open(path) as handle:
        handle.write(text)
        handle.write("\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    count = 0
    with atomic_open(path) as handle:
        for record in records:
            handle.write(dumps_record(record, path, sort_keys=False))
            handle.write("\n")
            count += 1
    return count


def _torn_tail(handle, size: int) -> tuple[int, bytes] | None:
    """(offset, bytes) of a last line that has no newline, or None when the file ends cleanly."""
    if size == 0:
        return None
    handle.seek(size - 1)
    if handle.read(1) == b"\n":
        return None
    start, block = size, 1 << 16
    while start > 0:  # find the last newline, reading backwards
        begin = max(0, start - block)
        handle.seek(begin)
        chunk = handle.read(start - begin)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            start = begin + cut + 1
            break
        start = begin
    handle.seek(start)
    return start, handle.read(size - start)


def _complete_record(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def append_jsonl(path: str | os.PathLike, records: dict | Iterable[dict], *, fsync: bool = True) -> None:
    """Append records, one line each, to an append-only JSONL file (created if missing).

    A torn last line left by a crash (no newline, not a complete JSON object) is cut
    first, with a warning naming the file and byte offset; a complete last record that
    only lacks its newline gets one. The lines are written in one write, flushed and
    fsynced, all under an exclusive flock of the file: several processes may append (jobs
    sharing a cache), and a cut never removes a line another writer is still writing."""
    path = Path(path)
    records = [records] if isinstance(records, dict) else list(records)
    data = "".join(dumps_record(record, path) + "\n" for record in records).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        # Several processes may append to one file (jobs sharing a cache): the check, the cut and
        # the append happen under an exclusive lock, so a cut never removes another writer's line.
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        size = handle.seek(0, os.SEEK_END)
        torn = _torn_tail(handle, size)
        if torn is not None:
            offset, raw = torn
            if _complete_record(raw):
                data = b"\n" + data
            else:
                log.warning("%s: cutting a torn last line at byte %d (%d bytes, an interrupted write)",
                            path, offset, len(raw))
                handle.truncate(offset)
        handle.seek(0, os.SEEK_END)
        handle.write(data)
        handle.flush()
        if fsync:
            os.fsync(handle.fileno())


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:  # name the line, as read_jsonl does
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"{path}, line {line}: not valid UTF-8 (byte {err.start} of the file: "
                        f"{data[err.start:err.start + 4]!r})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})") from None
    _check_unicode(value, str(path))
    return value


def decode_line(raw: bytes, where: str) -> str:
    """Strict UTF-8 text of one line; DataError naming `where` and the byte offset otherwise."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{where}: not valid UTF-8 (byte {err.start} of the line: "
                        f"{raw[err.start:err.start + 4]!r})") from None


def _check_unicode(record: Any, where: str) -> None:
    """JSON escapes can encode lone surrogates (\\ud800), which no UTF-8 file can hold."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{where}: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                        "which is not valid Unicode") from None


def read_jsonl(path: str | os.PathLike, *, required: Iterable[str] = (), torn_tail: str = "error",
               bad_lines: str = "error") -> list[dict]:
    """All records of a JSONL file; each must be an object holding the `required` keys.

    torn_tail: "error" (any bad line is an error naming file and line) or "skip" (for
    append-only files: a last line without newline that is not valid JSON is what an
    interrupted append leaves; it is skipped with a warning naming file and byte offset).
    bad_lines: "error", or "skip" for files whose lines can be rebuilt (caches, training
    metrics): a line that is not valid UTF-8 JSON anywhere in the file (a torn line that an
    older version appended the next record to, disk damage) is skipped with a warning naming
    file, line and byte offset, instead of failing every rerun."""
    path = Path(path)
    required = tuple(required)
    records = []
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    with handle:
        offset = 0
        for lineno, raw in enumerate(handle, start=1):
            line_offset, offset = offset, offset + len(raw)
            where = f"{path}, line {lineno}"
            if not raw.strip():
                continue
            try:
                record = json.loads(decode_line(raw, where))
            except (json.JSONDecodeError, DataError) as err:
                if torn_tail == "skip" and not raw.endswith(b"\n"):
                    log.warning("%s: skipping a torn last line at byte %d (%d bytes, an interrupted write)",
                                path, line_offset, len(raw))
                    break
                if bad_lines == "skip":
                    log.warning("%s: skipping damaged line %d at byte %d (%d bytes): %s", path, lineno, line_offset,
                                len(raw), err.msg if isinstance(err, json.JSONDecodeError) else str(err))
                    continue
                if isinstance(err, DataError):
                    raise
                raise DataError(f"{where}: not valid JSON ({err.msg})") from None
            _check_unicode(record, where)
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in required if key not in record]
            if missing:
                raise DataError(f"{where}: record lacks key(s) {', '.join(map(repr, missing))}")
            records.append(record)
    return records
