"""Seeds and atomic file writes."""

from __future__ import annotations

import pytest

from agfsync.core.io import DataError, atomic_open, read_json, read_jsonl, write_jsonl
from agfsync.core.seeds import derive_seed


def test_seed_golden_values():
    # sha256("200\x1fqa\x1fanimals-0123456789"), first 8 bytes, top 63 bits
    assert derive_seed(200, "qa", "animals-0123456789") == 7793817238017649154
    assert derive_seed(200, "qa", "animals-0123456789", bits=31) == 1814639484


def test_seeds_separate_parts_and_differ():
    assert derive_seed(1, "a", "bc") != derive_seed(1, "ab", "c")
    assert derive_seed(1, "x") != derive_seed(2, "x")
    assert len({derive_seed(200, "cand", "p", i) for i in range(1000)}) == 1000
    with pytest.raises(ValueError, match="bits must be in 1..64"):
        derive_seed(1, bits=65)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(RuntimeError):
        with atomic_open(path) as handle:
            handle.write('{"a": 2}\n{"half": ')
            raise RuntimeError("crash mid-write")
    assert read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]  # no temp file left behind


def test_read_errors_name_file_and_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1}\n\n[1]\n')
    with pytest.raises(DataError, match=r"x.jsonl, line 3: expected a JSON object, got list"):
        read_jsonl(path)
    path.write_text('{"id": 1}\n{"id": \n')
    with pytest.raises(DataError, match=r"x.jsonl, line 2: not valid JSON"):
        read_jsonl(path)
    with pytest.raises(DataError, match=r"missing.json: file not found"):
        read_json(tmp_path / "missing.json")


def test_pick_device_resolves_auto():
    import torch

    from agfsync.models.loaders import pick_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; outputs must be readable like any file (umask 022: 0644)."""
    import stat
    import subprocess
    import sys

    code = ("import os; os.umask(0o022); from agfsync.core.io import write_json; "
            f"write_json({str(tmp_path / 'r.json')!r}, {{'a': 1}})")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


# -- append-only JSONL and the decoding boundary (issue 13: torn tails, bad bytes, NaN) ---------------


@pytest.mark.parametrize("tail", [b'{"step": 3, "loss"', b'{"step": 3, "loss": 0.5', b'{"st', b"\xe2\x82", b"}"])
def test_a_torn_tail_is_cut_before_the_next_append_naming_file_and_offset(tmp_path, caplog, tail):
    from agfsync.core.io import append_jsonl

    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}\n' + tail)
    assert [r["step"] for r in read_jsonl(path, torn_tail="skip")] == [1, 2]
    assert f"{path}: skipping a torn last line at byte 24 ({len(tail)} bytes, an interrupted write)" in caplog.text
    with pytest.raises(DataError, match=r"line 3: not valid"):
        read_jsonl(path)  # the default stays strict
    append_jsonl(path, {"step": 3})
    assert f"{path}: cutting a torn last line at byte 24 ({len(tail)} bytes, an interrupted write)" in caplog.text
    assert path.read_bytes() == b'{"step": 1}\n{"step": 2}\n{"step": 3}\n'
    append_jsonl(path, [{"step": 4}, {"step": 5}])
    assert [r["step"] for r in read_jsonl(path)] == [1, 2, 3, 4, 5]


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path, caplog):
    from agfsync.core.io import append_jsonl

    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}')
    assert read_jsonl(path, torn_tail="skip") == [{"a": 1}, {"a": 2}]
    append_jsonl(path, {"a": 3})
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n' and "torn" not in caplog.text


def test_a_bad_line_before_the_tail_is_still_an_error(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(DataError, match=rf"^{path}, line 2: not valid JSON"):
        read_jsonl(path, torn_tail="skip")


def test_bad_bytes_and_lone_surrogates_name_file_and_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"id": "a-1"}\n{"id": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert str(err.value) == f"{path}, line 2: not valid UTF-8 (byte 11 of the line: b'\\xe9\"}}\\n')"
    path.write_bytes(b'{"id": "a-1"}\n{"id": "x\\ud800y"}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    assert str(err.value) == (f"{path}, line 2: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                              "which is not valid Unicode")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_json_writers_refuse_non_finite_numbers_naming_the_key(tmp_path, value):
    from agfsync.core.io import append_jsonl, write_json

    for write in (write_json, write_jsonl, append_jsonl):
        path = tmp_path / f"{write.__name__}.json"
        record = {"final": {"loss": 0.5, "margins": [1.0, value]}}
        with pytest.raises(DataError) as err:
            write(path, record if write is write_json else [record])
        assert str(err.value) == (f"{path}: refusing to write a non-finite number at key 'final.margins[1]' "
                                  "(NaN and infinity are not JSON)")
        assert not path.exists()


def test_damaged_lines_inside_a_rebuildable_file_are_skipped_when_asked(tmp_path, caplog):
    # what an older version left: a torn line with the next record appended to it
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2, "te{"a": 3}\n{"a": 4}\n\xff\xfe\n{"a": 5}\n')
    with pytest.raises(DataError, match=r"line 2: not valid JSON"):
        read_jsonl(path, torn_tail="skip")
    assert read_jsonl(path, torn_tail="skip", bad_lines="skip") == [{"a": 1}, {"a": 4}, {"a": 5}]
    assert f"{path}: skipping damaged line 2 at byte 9 (21 bytes)" in caplog.text
    assert f"{path}: skipping damaged line 4 at byte 39 (3 bytes)" in caplog.text


def test_appends_from_several_processes_never_lose_a_record(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "shared.jsonl"
    path.write_bytes(b'{"w": -1}\n{"w": -1, "torn')  # a torn tail the first writer cuts, under the lock
    code = ("import sys; from agfsync.core.io import append_jsonl\n"
            "for i in range(200): append_jsonl(sys.argv[1], {'w': int(sys.argv[2]), 'i': i, 'pad': 'x' * 3000}, "
            "fsync=False)")
    writers = [subprocess.Popen([sys.executable, "-c", code, str(path), str(w)]) for w in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in writers)
    records = read_jsonl(path)
    assert len(records) == 801 and sorted((r["w"], r["i"]) for r in records[1:]) == [
        (w, i) for w in range(4) for i in range(200)]
