"""Seeds and atomic file writes."""

from __future__ import annotations

import pytest

from agfsync.io import DataError, atomic_open, read_json, read_jsonl, write_jsonl
from agfsync.seeds import derive_seed


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

    from agfsync.models import pick_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert pick_device(None).type == pick_device("auto").type == expected
    assert pick_device("cpu") == torch.device("cpu")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    """mkstemp creates 0600 files; outputs must be readable like any file (umask 022: 0644)."""
    import stat
    import subprocess
    import sys

    code = ("import os; os.umask(0o022); from agfsync.io import write_json; "
            f"write_json({str(tmp_path / 'r.json')!r}, {{'a': 1}})")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
