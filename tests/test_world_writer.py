"""The world writer (agfsync.world.writer): the caption parser it reads prompts with, the
world categories of the prompts stage, and provider `world`: the LLM stages asking a local
deterministic OpenAI-compatible server through the real client (HTTP, cache, retries,
repairs, parsers), which is stopped when the client is closed or the stage is done."""

from __future__ import annotations

import gc
import json
import random
import socket
import threading
import urllib.error
import urllib.request

import pytest

from agfsync.core.categories import CATEGORIES, WORLD_CATEGORIES, category, category_errors
from agfsync.core.io import read_jsonl
from agfsync.core.sections import PromptsSettings, QASettings, Settings
from agfsync.core.settings import SettingsError
from agfsync.llm import providers
from agfsync.llm.base import ItemFailure, LLMError, LLMSettings, Request
from agfsync.llm.client import LLMClient
from agfsync.models.text_embed import ngram_embed
from agfsync.stages import prompts as prompts_stage
from agfsync.stages import qa as qa_stage
from agfsync.world import captions, grammar, questions, scenes
from agfsync.world.writer import WorldWriter

WORLD_LLM = {"provider": "world", "model": "world-writer", "api_key_env": None, "temperature": 0.9, "top_p": 0.7,
             "timeout_s": 10, "max_retries": 3, "backoff_s": 0.01, "max_backoff_s": 0.05, "concurrency": 4,
             "max_requests": 500, "repair_attempts": 2, "min_yield": 0.5}


class Recorded(WorldWriter):
    """A WorldWriter that notes its port, to check afterwards that the port is closed."""
    ports: list[int] = []

    def start(self):
        super().start()
        Recorded.ports.append(self.port)
        return self


@pytest.fixture
def world(monkeypatch):
    """Provider `world` registered (as the workflow's scripts do) with recording writers."""
    Recorded.ports = []
    monkeypatch.setitem(providers._LOCAL_SERVERS, "world", Recorded)
    return Recorded.ports


def closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def writer_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("world writer")]


def post(url: str, body, path: str = "/chat/completions") -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def body_of(request: Request, model: str = "world-writer") -> dict:
    return {"model": model, "messages": list(request.messages), "seed": request.seed}


# ----------------------------------------------------------------------------- the caption parser


def test_writer_caption_parser_round_trips_5000_captions():
    """parse(caption(d)) == d, category included (captions do not name it; parse infers it from
    the structure, which is unambiguous for every sampled description)."""
    n = 0
    for split in ("seen", "unseen"):
        for name in grammar.CATEGORIES:
            rng = random.Random(f"{split}/{name}")
            for _ in range(420):
                description = scenes.sample_description(rng, name, split)
                text = captions.caption(description, rng)
                assert captions.parse(text) == description, text
                assert captions.parse(text.upper() + ".") == description, text
                n += 1
    assert n >= 5000


@pytest.mark.parametrize("text, message", [
    ("a red circle and a dog", "unknown words; unparsed words: 'dog'"),
    ("a photo of a circle", "expected a color, got shape 'circle'; unparsed words: 'circle'"),
    ("two red circle", "a singular shape after a count of 2; unparsed words: 'two red circle'"),
    ("a red circle and a small blue square", "its objects, counts and relations fit no world category"),
])
def test_writer_caption_parser_rejects_text_outside_the_grammar(text, message):
    with pytest.raises(ValueError) as info:
        captions.parse(text)
    assert str(info.value) == f"caption {text!r} is outside the world's grammar: {message}"


# ----------------------------------------------------------------------------- categories


def test_writer_world_categories_are_selectable_and_the_paper_default_stays():
    assert len(CATEGORIES) == 12 and "world/colors" not in CATEGORIES
    assert WORLD_CATEGORIES == tuple(f"world/{name}" for name in grammar.CATEGORIES)
    for name in WORLD_CATEGORIES:
        cat = category(name)
        assert cat.slug == name.replace("/", "_") and len(cat.examples) == 5
        assert {captions.parse(e).category for e in cat.examples} == {name.split("/")[1]}
    prompts = PromptsSettings.from_dict({"per_category": 2, "categories": list(WORLD_CATEGORIES), "llm": WORLD_LLM},
                                        "prompts")
    assert prompts.categories == WORLD_CATEGORIES and prompts.llm.provider == "world"


def test_writer_bad_category_name_names_the_key_and_the_valid_names():
    expected = ("key 'prompts.categories[1]': unknown category 'world/dinosaurs' (known: the paper's "
                "Natural Landscapes, Cities & Architecture, People, Animals, Plants, Food & Beverages, Sports & "
                "Fitness, Art & Culture, Technology & Industry, Everyday Objects, Transportation, Abstract & "
                "Conceptual; the world's world/single_object, world/colors, world/counting, world/spatial, "
                "world/sizes, world/multiple_objects)")
    assert category_errors(["world/colors", "world/dinosaurs"]) == [expected]
    with pytest.raises(SettingsError) as info:
        PromptsSettings.from_dict({"per_category": 2, "categories": ["world/colors", "world/dinosaurs"],
                                   "llm": WORLD_LLM}, "prompts")
    assert str(info.value) == expected


# ----------------------------------------------------------------------------- the server


def test_writer_answers_deterministically_and_rejects_unknown_requests():
    request = prompts_stage.build_request(category("world/spatial"), 0, 5, seed=200)
    with WorldWriter(fault_every=0) as one, WorldWriter(fault_every=0) as two:
        first = post(one.base_url, body_of(request))
        assert first == post(one.base_url, body_of(request)) == post(two.base_url, body_of(request))
        status, data = first
        texts = json.loads(json.loads(data)["choices"][0]["message"]["content"])["descriptions"]
        assert status == 200 and len(set(texts)) == 5
        assert {captions.parse(t).category for t in texts} == {"spatial"}
        other_batch = prompts_stage.build_request(category("world/spatial"), 1, 5, seed=200)
        assert post(one.base_url, body_of(other_batch))[1] != data
        assert post(one.base_url, dict(body_of(request), seed=7))[1] != data

        status, data = post(one.base_url, {"model": "m", "messages": [{"role": "user", "content": "hello"}]})
        assert status == 400 and json.loads(data)["error"]["message"].startswith("not a request of the prompts or QA")
        paper = prompts_stage.build_request(category("Animals"), 0, 5, seed=200)
        status, data = post(one.base_url, body_of(paper))
        assert status == 400 and "got 'Animals'" in json.loads(data)["error"]["message"]
        assert post(one.base_url, b"{not json")[0] == 400
        assert post(one.base_url, body_of(request), path="/embeddings")[0] == 404
        ports = [one.port, two.port]
    assert all(closed(port) for port in ports) and writer_threads() == []


def test_writer_faults_are_deterministic_and_do_not_change_the_outputs():
    """1 in 3 requests answered with cut JSON first (repaired) or HTTP 503 first (retried):
    the stages write exactly what they write without faults."""
    prompts = PromptsSettings.from_dict({"per_category": 4, "descriptions_per_request": 4,
                                         "categories": list(WORLD_CATEGORIES), "dedup": {"embedder": "ngram"},
                                         "llm": WORLD_LLM}, "prompts")
    qa = QASettings.from_dict({"mode": "yes_no", "min_pairs": 3, "llm": WORLD_LLM}, "qa")
    runs = []
    for every in (0, 3):
        llm = LLMSettings.from_dict(WORLD_LLM)
        with LLMClient(llm, stage="prompts", cache_path=None,
                       provider=providers.LocalServerProvider(llm, "prompts", lambda: WorldWriter(fault_every=every))
                       ) as client:
            records, summary = prompts_stage.generate_prompts(prompts, client, ngram_embed, seed=200)
            kept, qa_summary = qa_stage.generate_qa(qa, client, records, seed=200)
        runs.append((records, kept, summary["num_repaired_requests"] + qa_summary["num_repaired"],
                     summary["llm"]["retries"] + qa_summary["llm"]["retries"]))
    (records, kept, repaired, retries), faulty = runs
    assert faulty[:2] == (records, kept) and len(records) == 24 and len(kept) == 24
    assert (repaired, retries) == (0, 0) and faulty[2] > 0 and faulty[3] > 0


# ----------------------------------------------------------------------------- provider world, the stages


def test_writer_runs_the_prompts_and_qa_stages_and_stops_with_them(demo_config, world, tmp_path):
    from agfsync.stages.prompts import write_prompts
    from agfsync.stages.qa import write_qa

    cfg = demo_config
    cfg["llm_cache_dir"] = str(tmp_path / "cache")
    cfg["prompts"].update({"categories": list(WORLD_CATEGORIES), "per_category": 4, "descriptions_per_request": 4,
                           "max_requests_per_category": 2, "llm": dict(WORLD_LLM)})
    cfg["qa"].update({"mode": "yes_no", "min_pairs": 3, "llm": dict(WORLD_LLM)})
    settings = Settings.from_dict(cfg)
    summary = write_prompts(settings, tmp_path / "p.jsonl", tmp_path / "ps.json")
    qa_summary = write_qa(settings, tmp_path / "p.jsonl", tmp_path / "qa.jsonl", tmp_path / "qs.json")
    gc.collect()
    assert len(world) == 2 and all(closed(port) for port in world) and writer_threads() == []

    records = read_jsonl(tmp_path / "p.jsonl")
    assert summary["num_prompts"] == 24 and summary["llm"]["provider"] == "world"
    assert [r["category"] for r in records] == [c for c in WORLD_CATEGORIES for _ in range(4)]
    for record in records:
        assert captions.parse(record["prompt"]).category == record["category"].split("/")[1]
    kept = read_jsonl(tmp_path / "qa.jsonl")
    assert qa_summary["num_prompts_kept"] == len(kept) == 24
    for item in kept:  # every pair is a question of the world's grammar, answered as the description says
        description = captions.parse(item["prompt"])
        rng = random.Random(item["id"])
        layouts = [s for s in (scenes.layout(description, rng) for _ in range(20)) if s is not None][:2]
        assert len(item["qa"]) >= 3 and layouts
        for pair in item["qa"]:
            questions.parse(pair)
            assert pair["choices"] == ["yes", "no"] and pair["answer"] == "yes"
            assert all(questions.truth(scene, pair) == pair["answer"] for scene in layouts), pair

    # A rerun is answered from the cache: no request, identical outputs.
    first = (tmp_path / "p.jsonl").read_bytes(), (tmp_path / "qa.jsonl").read_bytes()
    again = write_prompts(settings, tmp_path / "p.jsonl", tmp_path / "ps.json")
    write_qa(settings, tmp_path / "p.jsonl", tmp_path / "qa.jsonl", tmp_path / "qs.json")
    assert again["llm"]["requests_sent"] == 0 and again["llm"]["cache_hits"] > 0
    assert ((tmp_path / "p.jsonl").read_bytes(), (tmp_path / "qa.jsonl").read_bytes()) == first


def test_writer_client_close_stops_the_server_and_bad_requests_are_400(world):
    llm = LLMSettings.from_dict(WORLD_LLM)
    with LLMClient(llm, stage="qa", cache_path=None) as client:
        assert client.provider.endpoint == "world-writer/1" and client.provider.server.base_url.startswith(
            "http://127.0.0.1:")
        request = qa_stage.build_request({"id": "x", "prompt": "a red double-decker bus"}, "yes_no", seed=1)
        with pytest.raises(ItemFailure) as info:
            client.complete(request)
    assert str(info.value).startswith("HTTP 400 caption 'a red double-decker bus' is outside the world's grammar")
    assert closed(world[0]) and writer_threads() == []
    client.close()  # idempotent


def test_writer_provider_world_must_be_registered(monkeypatch):
    monkeypatch.delitem(providers._LOCAL_SERVERS, "world", raising=False)
    with pytest.raises(LLMError, match=r"^qa: provider 'world' is not registered in this process"):
        LLMClient(LLMSettings.from_dict(WORLD_LLM), stage="qa", cache_path=None)
