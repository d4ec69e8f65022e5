"""QA stage: record validation, both modes, and a run against a local endpoint with failures."""

from __future__ import annotations

import json

import pytest
from conftest import live_llm
from fake_openai import FakeOpenAI, error, ok
from helpers import caption_of, description, qa_json, settings

from agfsync.core.io import read_jsonl
from agfsync.llm.answers import BadOutput
from agfsync.llm.base import Reply
from agfsync.stages.qa import ELEMENT_TYPES, build_request, make_parser, validate_pair, write_qa

YN = {"element": "fox", "element_type": "animal", "question": "Is there a fox?", "choices": ["yes", "no"], "answer": "yes"}
MC = {"element": "red", "element_type": "color", "question": "What color is the fox?",
      "choices": ["red", "grey", "white"], "answer": "Red"}


def test_element_types_are_tifa_s():
    assert ELEMENT_TYPES == ("object", "human", "animal", "food", "activity", "attribute", "counting", "color",
                             "material", "spatial", "location", "shape", "size", "other")


def test_valid_pairs_are_normalised():
    pair, reason = validate_pair({**YN, "choices": ["Yes", "No"], "answer": "YES", "question": " Is  there a fox? "}, "yes_no")
    assert reason is None
    assert pair == {"question": "Is there a fox?", "choices": ["yes", "no"], "answer": "yes", "element": "fox",
                    "element_type": "animal"}
    pair, reason = validate_pair(MC, "multiple_choice")
    assert reason is None and pair["answer"] == "red" and pair["choices"] == ["red", "grey", "white"]


@pytest.mark.parametrize(
    "change, mode, reason",
    [
        ({"question": "  "}, "yes_no", "empty or missing question"),
        ({"element": None}, "yes_no", "empty or missing element"),
        ({"element_type": "sport"}, "yes_no", "unknown element_type 'sport'"),
        ({"choices": "yes/no"}, "yes_no", "choices must be a list of non-empty strings"),
        ({"choices": ["yes", "yes"]}, "yes_no", "need at least 2 distinct choices"),
        ({"answer": "maybe"}, "yes_no", "answer is not among the choices"),
        ({"choices": ["red", "blue"], "answer": "red"}, "yes_no", "yes_no mode needs choices [yes, no]"),
    ],
)
def test_invalid_pairs_are_rejected_with_a_reason(change, mode, reason):
    assert validate_pair({**YN, **change}, mode) == (None, reason)


def test_multiple_choice_mode_accepts_both_kinds():
    assert validate_pair(YN, "multiple_choice")[1] is None and validate_pair(MC, "multiple_choice")[1] is None
    assert validate_pair(MC, "yes_no")[1] == "yes_no mode needs choices [yes, no]"


def test_parser_drops_duplicates_caps_and_requires_min_pairs():
    from collections import Counter

    invalid = Counter()
    items = [{**YN, "question": f"Is there fox {i}?"} for i in range(7)] + [YN, YN, {**YN, "answer": "x"}]
    pairs = make_parser("animals-0123456789", "yes_no", 5, 6, invalid)(Reply(text=json.dumps({"qa": items})))
    assert [p["question_id"] for p in pairs] == [f"animals-0123456789-q{i:02d}" for i in range(6)]
    assert invalid == {"duplicate question": 1, "answer is not among the choices": 1}
    with pytest.raises(BadOutput, match=r"too few valid question/answer pairs: 2 of the 5 needed \(1 x unknown"):
        make_parser("p", "yes_no", 5, 20, Counter())(Reply(text=json.dumps({"qa": [YN, {**YN, "question": "b?"},
                                                                                  {**YN, "element_type": "z"}]})))
    with pytest.raises(BadOutput, match="expected a list in field 'qa' \\(the object has: 'questions'\\)"):
        make_parser("p", "yes_no", 5, 20, Counter())(Reply(text='{"questions": []}'))


def test_request_has_mode_rules_and_a_few_shot_example():
    record = {"id": "animals-0123456789", "prompt": "A red fox in snow"}
    yn, mc = build_request(record, "yes_no", 200), build_request(record, "multiple_choice", 200)
    assert yn.key == "qa/animals-0123456789" and yn.messages[-1]["content"] == "Description: A red fox in snow"
    assert "whose answer is \"yes\"" in yn.messages[0]["content"]
    assert "2 to 4 plausible choices" in mc.messages[0]["content"]
    assert json.loads(mc.messages[2]["content"])["qa"][1]["choices"] == ["red", "blue", "green", "yellow"]


def prompts(n):
    return [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": description("qa", i)} for i in range(n)]


def scripted(body, seen):
    """Prompt 1: malformed JSON once (repaired). Prompt 2: HTTP 500 always (skipped).
    Prompt 3: only 3 pairs, every time (dropped). Prompt 4: 2 invalid pairs mixed in (kept).
    Prompt 5: 429 once, then good."""
    caption = caption_of(body)
    repaired = len(body["messages"]) > 4
    if caption == description("qa", 1) and not repaired:
        return ok('{"qa": [{"question": "Is there')
    if caption == description("qa", 2):
        return error(500)
    if caption == description("qa", 3):
        return ok(qa_json(caption, n=3))
    if caption == description("qa", 4):
        return ok(qa_json(caption, extra=[{**YN, "element_type": "sport"}, {**YN, "answer": "no!"}]))
    if caption == description("qa", 5) and seen == 0:
        return error(429)
    return ok(qa_json(caption))


def test_stage_keeps_good_items_reports_bad_ones_and_reruns_for_free(demo_config, api_key, tmp_path):
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts(8)))
    with FakeOpenAI(scripted) as server:
        cfg = demo_config
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["qa"]["llm"] = live_llm(server.base_url, max_retries=2)
        args = (settings(cfg, "qa_generate"), tmp_path / "prompts.jsonl", tmp_path / "qa.jsonl", tmp_path / "qa_summary.json")
        summary = write_qa(*args)
        sent = len(server.requests)
        kept = read_jsonl(tmp_path / "qa.jsonl")

        assert [r["id"] for r in kept] == [f"animals-{i:010d}" for i in (0, 1, 4, 5, 6, 7)]
        assert all(len(r["qa"]) == 6 for r in kept)
        assert summary["num_prompts_kept"] == 6 and summary["num_pairs"] == 36 and summary["num_repaired"] == 1
        assert summary["skipped_bad_output"]["items"] == [
            {"id": "animals-0000000002", "reasons": ["HTTP 500 server error (gave up after 3 attempts)"], "outage": True}]
        dropped = summary["dropped_too_few_pairs"]["items"]
        assert [d["id"] for d in dropped] == ["animals-0000000003"] and len(dropped[0]["reasons"]) == 3
        assert dropped[0]["reasons"][0] == "too few valid question/answer pairs: 3 of the 5 needed"
        assert summary["invalid_pairs"] == {"unknown element_type 'sport'": 1, "answer is not among the choices": 1}
        assert summary["llm"]["retries"] == 2 + 1
        assert summary["element_types"] == {"object": 36}

        first = (tmp_path / "qa.jsonl").read_text()
        summary2 = write_qa(*args)
        assert len(server.requests) == sent + 3  # a rerun asks again only what failed as an outage (prompt 2)
        assert {caption_of(body) for body in server.requests[sent:]} == {description("qa", 2)}
        assert (tmp_path / "qa.jsonl").read_text() == first
        assert summary2["num_prompts_kept"] == 6 and summary2["llm"]["requests_sent"] == 3


def test_bad_prompts_file_names_file_and_line(demo_config, tmp_path):
    from agfsync.core.io import DataError

    (tmp_path / "prompts.jsonl").write_text('{"id": "a", "prompt": "x"}\n{"id": "b"}\n')
    with pytest.raises(DataError, match=r"prompts.jsonl, line 2: record lacks key\(s\) 'prompt'"):
        write_qa(settings(demo_config, "qa_generate"), tmp_path / "prompts.jsonl", tmp_path / "o.jsonl", tmp_path / "s.json")
