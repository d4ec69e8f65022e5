"""Prompt-writing stage: parsing, dedup, and a full run against a local endpoint with failures."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import live_llm
from fake_openai import FakeOpenAI, error, html_page, ok
from helpers import category_and_batch, description, descriptions_json, settings

from agfsync.core.io import read_json, read_jsonl
from agfsync.llm.answers import BadOutput
from agfsync.llm.base import LLMSettings, Reply
from agfsync.llm.client import LLMClient
from agfsync.stages.prompts import (
    CATEGORIES, NearDuplicateFilter, build_request, category, generate_prompts, normalise, parse_descriptions,
    prompt_id, write_prompts,
)
from agfsync.models.text_embed import ngram_embed


def test_twelve_categories_of_the_paper():
    assert CATEGORIES == (
        "Natural Landscapes", "Cities & Architecture", "People", "Animals", "Plants", "Food & Beverages",
        "Sports & Fitness", "Art & Culture", "Technology & Industry", "Everyday Objects", "Transportation",
        "Abstract & Conceptual",
    )
    assert [category(c).slug for c in CATEGORIES][:6] == [
        "natural_landscapes", "cities_architecture", "people", "animals", "plants", "food_beverages"]
    assert all(len(category(c).examples) == 5 for c in CATEGORIES)


def test_request_carries_rules_examples_and_a_stable_seed():
    cat = category("Animals")
    req = build_request(cat, 2, 20, seed=200)
    assert req.key == "prompts/animals/batch002"
    assert '{"descriptions": ["...", "..."]}' in req.messages[0]["content"]
    assert cat.examples[0] in req.messages[0]["content"]
    assert "Write 20 new descriptions" in req.messages[1]["content"] and "batch 3" in req.messages[1]["content"]
    assert req.seed == build_request(cat, 2, 20, seed=200).seed != build_request(cat, 3, 20, seed=200).seed
    assert 0 <= req.seed < 2**31


def test_parse_descriptions_cleans_and_filters():
    reply = Reply(text='{"descriptions": ["1. A red  fox in snow", 42, "ok", "- Two cats on a sofa"]}')
    assert parse_descriptions(reply) == ["A red fox in snow", "Two cats on a sofa"]


@pytest.mark.parametrize(
    "text, reason",
    [
        ('{"prompts": ["a b c d"]}', "lacks the field 'descriptions' (has: 'prompts')"),
        ('{"descriptions": "a b c d"}', "'descriptions' must be a list of strings, got str"),
        ('{"descriptions": ["hi", 3]}', "no usable description among 2 item(s)"),
    ],
)
def test_parse_descriptions_rejects(text, reason):
    with pytest.raises(BadOutput) as info:
        parse_descriptions(Reply(text=text))
    assert reason in str(info.value)


def test_ids_are_stable_and_path_safe():
    cat = category("Food & Beverages")
    pid = prompt_id(cat, "A bowl of Ramen!")
    assert pid == prompt_id(cat, "a bowl of ramen") == "food_beverages-" + pid.split("-")[1]
    assert normalise("A  bowl, of RAMEN.") == "a bowl of ramen"
    assert all(ch.isalnum() or ch in "_-" for ch in pid) and len(pid.split("-")[1]) == 10


def test_near_duplicate_filter():
    texts = ["A red fox curled up asleep in fresh snow", "A red fox curled up asleep in the fresh snow",
             "a red fox curled up asleep in fresh snow!", "Three ducklings following their mother across a pond"]
    verdicts = NearDuplicateFilter(ngram_embed, 0.9).filter(texts, ["a", "b", "c", "d"])
    assert verdicts[0] is None and verdicts[3] is None
    assert verdicts[1].startswith("near duplicate of a (cosine 0.9")
    assert verdicts[2] == "exact duplicate of a"


def test_ngram_embeddings_are_unit_vectors():
    vectors = ngram_embed(["a cat", "a dog on a mat", ""])
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-6)
    assert float(vectors[0] @ vectors[0]) == pytest.approx(1.0, abs=1e-6)


def stage_config(demo_config, base_url, **llm):
    cfg = demo_config
    cfg["prompts"].update(
        {"categories": ["Animals", "Plants", "People", "Food & Beverages"], "per_category": 6,
         "descriptions_per_request": 4, "max_requests_per_category": 4, "llm": live_llm(base_url, **llm)}
    )
    return cfg


def scripted(body, seen):
    """Good answers, except: Animals batch 0 hits 429 twice; Plants batch 0 is an HTML page with
    status 200 every time (a proxy's page) (skipped, so a later batch fills the category); People batch 0 answers prose
    first (repaired); Food batch 0 refuses every time (skipped); Food batch 1 repeats itself."""
    cat, batch = category_and_batch(body)
    repaired = len(body["messages"]) > 2
    if cat == "Animals" and batch == 0 and seen < 2:
        return error(429)
    if cat == "Plants" and batch == 0:
        return html_page(200)
    if cat == "People" and batch == 0 and not repaired:
        return ok("Here are some lovely ideas for pictures of people!")
    if cat == "Food & Beverages" and batch == 0:
        return ok("I'm sorry, I can't help with that.")
    if cat == "Food & Beverages" and batch == 1:
        d = [description(cat, 1, 0), description(cat, 1, 0).upper(), description(cat, 1, 1) + " today",
             description(cat, 1, 1)]
        return ok('{"descriptions": %s}' % str(d).replace("'", '"'))
    return ok(descriptions_json(cat, batch, 4))


def test_stage_keeps_good_items_reports_bad_ones_and_reruns_for_free(demo_config, api_key, tmp_path):
    with FakeOpenAI(scripted) as server:
        cfg = stage_config(demo_config, server.base_url)
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        sent = len(server.requests)
        records = read_jsonl(tmp_path / "p.jsonl")

        # Every good answer's descriptions are kept, in order, up to the target.
        by_cat = {c: [r["prompt"] for r in records if r["category"] == c] for c in cfg["prompts"]["categories"]}
        assert by_cat["Animals"] == [description("Animals", 0, i) for i in range(4)] + [
            description("Animals", 1, i) for i in range(2)]
        assert by_cat["People"] == [
            description("People", 0, i) for i in range(4)] + [description("People", 1, i) for i in range(2)]
        assert by_cat["Plants"] == [description("Plants", b, i) for b in (1, 2) for i in range(4)][:6]
        food = [description("Food & Beverages", 1, 0), description("Food & Beverages", 1, 1) + " today"]
        food += [description("Food & Beverages", 2, i) for i in range(4)]
        assert by_cat["Food & Beverages"] == food

        # Every bad one is reported with its reason.
        skipped = {s["key"]: s["reasons"] for s in summary["skipped_requests"]}
        assert set(skipped) == {"prompts/plants/batch000", "prompts/food_beverages/batch000"}
        assert skipped["prompts/plants/batch000"] == [
            "endpoint returned no choices (HTML page or empty body?) (gave up after 4 attempts)"]
        assert skipped["prompts/food_beverages/batch000"][0].startswith("refusal: I'm sorry")
        assert len(skipped["prompts/food_beverages/batch000"]) == 3  # first answer + 2 repairs
        food_counts = summary["per_category"]["Food & Beverages"]
        assert (food_counts["exact_duplicates"], food_counts["near_duplicates"]) == (1, 1)
        assert summary["num_prompts"] == 24 and summary["categories_short"] == {}
        assert summary["num_repaired_requests"] == 1  # People batch 0: prose, then JSON
        assert summary["llm"]["retries"] == 2 + 3  # Animals 429 x2, Plants HTML x3
        assert read_json(tmp_path / "s.json") == summary

        # Plants batch 0 failed as an outage (an HTML page every time): not cached. The refusal is cached.
        assert summary["failures"] == {"items": 10, "failed": 2,
                                       "outage": {"endpoint returned no choices (HTML page or empty body?)": 1},
                                       "other": {"refusal": 1}}

        # A rerun sends only the outage's requests again (answers and the refusal come from the
        # cache) and, the endpoint behaving the same, writes identical outputs.
        first = (tmp_path / "p.jsonl").read_text()
        summary2 = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        assert len(server.requests) == sent + 4
        assert {m["messages"][0]["content"].split("Category: ")[1][:6] for m in server.requests[sent:]} == {"Plants"}
        assert (tmp_path / "p.jsonl").read_text() == first
        assert summary2["llm"]["requests_sent"] == 4 and summary2["llm"]["cache_hits"] > 0


def test_output_does_not_depend_on_concurrency(demo_config, api_key, tmp_path):
    outputs = []
    for concurrency in (1, 8):
        with FakeOpenAI(scripted) as server:
            cfg = stage_config(demo_config, server.base_url, concurrency=concurrency)
            client = LLMClient(LLMSettings.from_dict(cfg["prompts"]["llm"]), stage="prompts",
                               cache_path=tmp_path / f"c{concurrency}.jsonl")
            records, _ = generate_prompts(settings(cfg, "prompts_generate").prompts, client, ngram_embed, seed=cfg["seed"])
            outputs.append(records)
    assert outputs[0] == outputs[1]


def test_category_left_short_is_reported(demo_config, api_key, tmp_path):
    with FakeOpenAI(lambda body, seen: ok("{}") if "Plants" in body["messages"][0]["content"]
                    else ok(descriptions_json(*category_and_batch(body), 4))) as server:
        cfg = stage_config(demo_config, server.base_url, repair_attempts=0)
        client = LLMClient(LLMSettings.from_dict(cfg["prompts"]["llm"]), stage="prompts", cache_path=None)
        records, summary = generate_prompts(settings(cfg, "prompts_generate").prompts, client, ngram_embed, seed=cfg["seed"])
    assert summary["categories_short"] == {"Plants": 0}
    assert summary["per_category"]["Plants"]["requests"] == 4  # max_requests_per_category
    assert len(records) == 18


def test_killed_run_resumes_without_losing_answers(demo_config, api_key, tmp_path):
    """A run stopped by its request budget (as a kill would stop it) keeps every answer;
    the rerun asks only for what is missing and ends with the same output as one clean run."""
    from agfsync.llm.base import BudgetExceeded

    with FakeOpenAI(lambda body, seen: ok(descriptions_json(*category_and_batch(body), 4))) as server:
        cfg = stage_config(demo_config, server.base_url, max_requests=3, concurrency=1)
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        with pytest.raises(BudgetExceeded):
            write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        assert not (tmp_path / "p.jsonl").exists()
        assert len(server.requests) == 3
        cfg["prompts"]["llm"]["max_requests"] = 1000
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
        assert summary["llm"]["cache_hits"] == 3 and len(server.requests) == 8  # 4 categories x 2 batches

        cfg["llm_cache_dir"] = str(tmp_path / "fresh")
        write_prompts(settings(cfg, "prompts_generate"), tmp_path / "clean.jsonl", tmp_path / "s2.json")
    assert (tmp_path / "clean.jsonl").read_text() == (tmp_path / "p.jsonl").read_text()
