"""Hostile and broken inputs where records enter each stage (issue 13, items 9 and 12):
unsafe and duplicate ids, bytes that are not UTF-8 and lone-surrogate escapes, each named
by file, line (or record) and id, through the stage functions themselves."""

from __future__ import annotations

import copy
import io
import json
import tarfile

import pytest
from conftest import REPO
from helpers import settings

from agfsync.core import benchmarks
from agfsync.core.ids import ID_PATTERN, ID_RULE, check_id, id_problem
from agfsync.core.io import DataError
from agfsync.core.shards import MANIFEST, Shard, image_member, latent_member, shard_records, write_shard

GOOD = {"id": "animals-1a2b3c4d5e", "category": "Animals", "prompt": "a red fox in snow"}

# (id written in the file, the problem the message names)
BAD_IDS = [
    ("../../etc/x", "is not a safe identifier"),
    ("a/b", "is not a safe identifier"),
    ("", "is not a safe identifier"),
    ("two words", "is not a safe identifier"),
    ("nul\x00byte", "is not a safe identifier"),
    ("line\n", "is not a safe identifier"),
    (".hidden", "is not a safe identifier"),
    ("-rf", "is not a safe identifier"),
    ("x" * 129, "is not a safe identifier"),
    ("a..b", "contains '..'"),
    ("17", "has no letter (an id is a name, not a number)"),
    ("0.5", "has no letter (an id is a name, not a number)"),
    (17, "is not a string (got int)"),
    (None, "is not a string (got NoneType)"),
]


def shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def write_lines(path, lines) -> str:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return str(path)


def test_legitimate_ids_pass():
    """What the stages and benchmarks really produce: prompts stage '<slug>-<10 hex>', TIFA,
    HPS v2 and MJHQ-30K (40 hex) ids."""
    for value in ("animals-1a2b3c4d5e", "people_portraits-0123456789", "coco_301091", "coco_val_123",
                  "partiprompt_12", "anime-000", "concept-art-799", "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567",
                  "photo-000.v2", "A" * 128):
        assert id_problem(value) is None, value
    assert ID_PATTERN == r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"


# ----------------------------------------------------------------------------- QA stage (prompts.jsonl)


@pytest.mark.parametrize("bad, problem", BAD_IDS, ids=[repr(b[0])[:20] for b in BAD_IDS])
def test_qa_stage_rejects_unsafe_prompt_ids(demo_config, tmp_path, bad, problem):
    from agfsync.stages.qa import write_qa

    path = write_lines(tmp_path / "prompts.jsonl", [GOOD, {**GOOD, "id": bad}])
    with pytest.raises(DataError) as err:
        write_qa(settings(demo_config, "qa_generate"), path, tmp_path / "qa.jsonl", tmp_path / "qa_summary.json")
    assert str(err.value) == f"{path}, line 2: prompt id {shown(bad)} {problem} ({ID_RULE})"
    assert not (tmp_path / "qa.jsonl").exists()


def test_qa_stage_message_in_full(demo_config, tmp_path):
    from agfsync.stages.qa import write_qa

    path = write_lines(tmp_path / "prompts.jsonl", [GOOD, {**GOOD, "id": "../../etc/x"}])
    with pytest.raises(DataError) as err:
        write_qa(settings(demo_config, "qa_generate"), path, tmp_path / "qa.jsonl", tmp_path / "s.json")
    assert str(err.value) == (
        f"{path}, line 2: prompt id '../../etc/x' is not a safe identifier (ids must match "
        "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$, contain a letter and no '..': they name files, tar members and seeds)")


def test_qa_stage_rejects_a_duplicate_prompt_id_naming_both_lines(demo_config, tmp_path):
    from agfsync.stages.qa import write_qa

    other = {**GOOD, "id": "animals-2", "prompt": "a heron"}
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(other) + "\n" + json.dumps({**GOOD, "prompt": "x"}) + "\n")
    with pytest.raises(DataError) as err:
        write_qa(settings(demo_config, "qa_generate"), path, tmp_path / "qa.jsonl", tmp_path / "s.json")
    assert str(err.value) == f"{path}, line 4: duplicate prompt id 'animals-1a2b3c4d5e' (first at line 1)"


def test_qa_stage_names_file_and_line_of_bytes_that_are_not_utf8(demo_config, tmp_path):
    from agfsync.stages.qa import write_qa

    path = tmp_path / "prompts.jsonl"
    line = b'{"id": "animals-2", "prompt": "caf\xe9 au lait"}\n'
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + line)
    with pytest.raises(DataError) as err:
        write_qa(settings(demo_config, "qa_generate"), path, tmp_path / "qa.jsonl", tmp_path / "s.json")
    offset = line.index(b"\xe9")
    assert str(err.value) == f"{path}, line 2: not valid UTF-8 (byte {offset} of the line: b'\\xe9 au')"


def test_qa_stage_names_file_and_line_of_a_lone_surrogate(demo_config, tmp_path):
    from agfsync.stages.qa import write_qa

    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"id": "animals-2", "prompt": "a \\ud800 fox"}\n')
    with pytest.raises(DataError) as err:
        write_qa(settings(demo_config, "qa_generate"), path, tmp_path / "qa.jsonl", tmp_path / "s.json")
    assert str(err.value) == (f"{path}, line 2: a string holds a lone surrogate escape (\\ud800-\\udfff), "
                              "which is not valid Unicode")


# ----------------------------------------------------------------------------- candidate stage (qa.jsonl)


def test_candidates_command_rejects_bad_qa_files_before_loading_a_model(tmp_path, capsys):
    from agfsync.cli import main

    def run(qa) -> tuple[int, str]:
        code = main(["candidates", "--config", str(REPO / "config" / "tiny.yaml"), "--model", "sd15", "--qa", str(qa),
                     "--shard", "0", "--out", str(tmp_path / "shard.tar")])
        return code, capsys.readouterr().err.splitlines()[-1]  # the job log shows the traceback before

    qa = write_lines(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "a/b"}])
    assert run(qa) == (2, f"agfsync candidates: error: {qa}, line 2: prompt id 'a/b' is not a safe identifier "
                          f"({ID_RULE})")
    # a duplicate in a LATER shard counts too: the pairs gather every shard
    qa = write_lines(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "animals-2"}, GOOD])
    assert run(qa) == (2, f"agfsync candidates: error: {qa}, line 3: duplicate prompt id 'animals-1a2b3c4d5e' "
                          "(first at line 1)")
    line = b'{"id": "animals-1", "prompt": "\xff"}\n'
    (tmp_path / "bad.jsonl").write_bytes(line)
    assert run(tmp_path / "bad.jsonl") == (
        2, f"agfsync candidates: error: {tmp_path / 'bad.jsonl'}, line 1: not valid UTF-8 (byte {line.index(255)} of "
           "the line: b'\\xff\"}\\n')")
    assert not (tmp_path / "shard.tar").exists()


def test_shard_records_and_member_names_check_ids():
    records = [GOOD, {**GOOD, "id": "animals-2"}, {**GOOD, "id": "animals-2"}]
    with pytest.raises(DataError) as err:
        shard_records(records, 0, 1, source="results/prompts/qa.jsonl")
    assert str(err.value) == "results/prompts/qa.jsonl, record 3: duplicate prompt id 'animals-2' (first at record 2)"
    with pytest.raises(DataError, match=r"^records, record 1: prompt id '\.\./x' is not a safe identifier"):
        shard_records([{"id": "../x"}], 0, 1)
    assert shard_records(records[:2], 1, 1) == [records[1]]
    assert image_member("animals-2", 3) == "images/animals-2.3.png"
    assert latent_member("animals-2", 3) == "latents/animals-2.3.npy"
    for bad in ("../../etc/x", "a/b", "17"):
        with pytest.raises(DataError, match=r"^shard member: prompt id "):
            image_member(bad, 0)
        with pytest.raises(DataError, match=r"^shard member: prompt id "):
            latent_member(bad, 0)
    with pytest.raises(DataError, match=r"candidate -1 is not an index >= 0"):
        image_member("animals-2", -1)


def test_generate_shard_checks_ids_before_any_work(demo_config, tmp_path):
    from agfsync.stages.candidates import generate_shard

    out = tmp_path / "s.tar"
    with pytest.raises(DataError) as err:
        generate_shard(settings(demo_config, "candidates_generate", model="sd15"), "sd15", [GOOD, {**GOOD, "id": "x/../../y"}], out)
    assert str(err.value).startswith(f"shard {out} input, record 2: prompt id 'x/../../y' is not a safe identifier")
    assert not out.exists()


def test_shard_reader_checks_manifest_ids_and_encoding(tmp_path):
    path = tmp_path / "s.tar"
    write_shard(path, [{"prompt_id": "animals-1", "candidate": 0}, {"prompt_id": "../../x", "candidate": 0}], [])
    with pytest.raises(DataError) as err:
        Shard(path)
    assert str(err.value).startswith(f"shard {path}: {MANIFEST} line 2: prompt id '../../x' is not a safe identifier")

    def raw_shard(manifest: bytes):
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(manifest)
            tar.addfile(info, io.BytesIO(manifest))

    line = b'{"prompt_id": "animals-\xc3(", "candidate": 0}\n'
    raw_shard(b'{"prompt_id": "animals-1", "candidate": 0}\n' + line)
    with pytest.raises(DataError) as err:
        Shard(path)
    assert str(err.value) == (f"shard {path}: {MANIFEST} line 2: not valid UTF-8 (byte {line.index(0xc3)} of the line: "
                              "b'\\xc3(\",')")


# ----------------------------------------------------------------------------- pairs (qa.jsonl and scores)


def score_row(prompt_id, k, total=50.0):
    return {"prompt_id": prompt_id, "candidate": k, "image": f"images/{prompt_id}.{k}.png", "seed": k,
            "vqa": total + k, "clip": total, "aesthetic": total}


def test_pairs_stage_checks_qa_and_score_ids(demo_config, tmp_path):
    from agfsync.core.pairs import select_pairs

    cfg = copy.deepcopy(demo_config)
    cfg["candidates"]["num_per_prompt"] = 2
    out, summary = tmp_path / "pairs.jsonl", tmp_path / "pairs_summary.json"
    qa = write_lines(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "animals-2"}])
    good = GOOD["id"]
    first = write_lines(tmp_path / "scores-0.jsonl", [score_row(good, 0), score_row(good, 1)])
    # the same prompt scored again in a second shard: two pairs of one prompt otherwise
    second = write_lines(tmp_path / "scores-1.jsonl", [score_row("animals-2", 0), score_row("animals-1a2b3c4d5e", 1)])
    with pytest.raises(DataError) as err:
        select_pairs(settings(cfg, "pairs_select"), [first, second], qa, ["s0.tar", "s1.tar"], out, summary)
    assert str(err.value) == (f"{second}, line 2: duplicate score of prompt id 'animals-1a2b3c4d5e' candidate 1 "
                              f"(first at {first}, line 2)")
    second = write_lines(tmp_path / "scores-1.jsonl", [score_row("animals-2", 0), score_row("../2", 1)])
    with pytest.raises(DataError, match=r"scores-1.jsonl, line 2: prompt id '\.\./2' is not a safe identifier"):
        select_pairs(settings(cfg, "pairs_select"), [first, second], qa, ["s0.tar", "s1.tar"], out, summary)
    qa = write_lines(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "animals-2"}, {**GOOD, "id": "animals-2"}])
    with pytest.raises(DataError) as err:
        select_pairs(settings(cfg, "pairs_select"), [first], qa, ["s0.tar"], out, summary)
    assert str(err.value) == f"{qa}, line 3: duplicate prompt id 'animals-2' (first at line 2)"
    line = b'{"prompt_id": "animals-2", "candidate": 0, "x": "\x80"}\n'
    (tmp_path / "scores-1.jsonl").write_bytes(line)
    qa = write_lines(tmp_path / "qa.jsonl", [GOOD, {**GOOD, "id": "animals-2"}])
    with pytest.raises(DataError) as err:
        select_pairs(settings(cfg, "pairs_select"), [first, second], qa, ["s0.tar", "s1.tar"], out, summary)
    assert str(err.value) == f"{second}, line 1: not valid UTF-8 (byte {line.index(0x80)} of the line: b'\\x80\"}}\\n')"
    assert not out.exists()
    second = write_lines(tmp_path / "scores-1.jsonl", [score_row("animals-2", 0), score_row("animals-2", 1)])
    assert select_pairs(settings(cfg, "pairs_select"), [first, second], qa, ["s0.tar", "s1.tar"], out, summary)["num_pairs"] == 2


# ----------------------------------------------------------------------------- evaluation and benchmarks


def test_evaluation_prompts_are_checked(demo_config, tmp_path):
    from agfsync.stages.evaluate import score_hps_shard

    prompts = write_lines(tmp_path / "prompts.jsonl", [{"id": "anime-000", "prompt": "x", "group": "anime"},
                                                       {"id": "anime-000", "prompt": "y", "group": "anime"}])
    with pytest.raises(DataError) as err:
        score_hps_shard(settings(demo_config, "eval_score", bench="hpsv2").eval.hpsv2, tmp_path / "missing.tar", prompts, tmp_path / "out.jsonl")
    assert str(err.value) == f"{prompts}, line 2: duplicate prompt id 'anime-000' (first at line 1)"
    (tmp_path / "prompts.jsonl").write_bytes(b'{"id": "anime-000", "prompt": "\xfe", "group": "anime"}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl, line 1: not valid UTF-8"):
        score_hps_shard(settings(demo_config, "eval_score", bench="hpsv2").eval.hpsv2, tmp_path / "missing.tar", prompts, tmp_path / "out.jsonl")


def test_benchmark_files_ids_and_bytes(demo_config, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cfg = copy.deepcopy(demo_config)
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([{"id": "coco_100001", "caption": "x"}, {"id": "coco_100001", "caption": "y"}]))
    cfg["eval"]["tifa"]["text_inputs"] = str(inputs)
    questions = json.loads((REPO / cfg["eval"]["tifa"]["questions"]).read_text())
    assert any(q["id"] == "coco_100001" for q in questions)
    with pytest.raises(DataError) as err:
        benchmarks.load_benchmark(cfg, "tifa")
    assert str(err.value) == f"{inputs}, record 1: duplicate id 'coco_100001' (first at record 0)"
    inputs.write_text(json.dumps([{"id": "1234", "caption": "x"}]))
    with pytest.raises(DataError, match=r"inputs.json, record 0: id '1234' has no letter"):
        benchmarks.load_benchmark(cfg, "tifa")
    data = b'[{"id": "coco_100001",\n "caption": "caf\xe9"}]'
    inputs.write_bytes(data)
    with pytest.raises(DataError) as err:
        benchmarks.load_benchmark(cfg, "tifa")
    assert str(err.value) == f"{inputs}, line 2: not valid UTF-8 (byte {data.index(0xe9)} of the file: b'\\xe9\"}}]')"
    inputs.write_text('[{"id": "coco_100001", "caption": "a \\udc80 b"}]')
    with pytest.raises(DataError) as err:
        benchmarks.load_benchmark(cfg, "tifa")
    assert str(err.value) == (f"{inputs}: a string holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                              "valid Unicode")


def test_check_id_message():
    with pytest.raises(DataError) as err:
        check_id("a/b", "f.jsonl, line 3")
    assert str(err.value) == f"f.jsonl, line 3: prompt id 'a/b' is not a safe identifier ({ID_RULE})"
    with pytest.raises(DataError, match=r"^f, record 0: id 'x{76}\.\.\. is not a safe identifier"):
        check_id("x" * 500, "f, record 0", "id")


def test_scoring_and_the_train_cache_check_ids_before_loading_a_model(demo_config, tmp_path):
    from agfsync.stages.scoring import score_shard
    from agfsync.train.data import build_train_cache

    qa = write_lines(tmp_path / "qa.jsonl", [{**GOOD, "qa": []}, {**GOOD, "id": "animals-2", "qa": []},
                                             {**GOOD, "id": "animals-2", "qa": []}])
    with pytest.raises(DataError) as err:  # a duplicate would score one prompt's images with another's questions
        score_shard(settings(demo_config, "candidates_score").scores, tmp_path / "missing.tar", qa, tmp_path / "scores.jsonl", progress=False)
    assert str(err.value) == f"{qa}, line 3: duplicate prompt id 'animals-2' (first at line 2)"
    pair = {"prompt_id": "a/b", "prompt": "p", "winner": {}, "loser": {}}
    pairs = write_lines(tmp_path / "pairs.jsonl", [pair])
    with pytest.raises(DataError, match=r"pairs.jsonl, line 1: prompt id 'a/b' is not a safe identifier"):
        build_train_cache(settings(demo_config, "train_cache", model="sd15"), "sd15", pairs, tmp_path / "cache")
