"""The prompt stage's near-duplicate embedders (prompts.dedup.embedder): bge, as the authors'
code embeds prompts (BAAI/bge-large-en-v1.5, a BERT: the [CLS] token's last hidden state,
L2-normalised), on a tiny random BERT built here and loaded through from_pretrained like the
real checkpoint; and the choice recorded in the prompts summary."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import live_llm
from fake_openai import FakeOpenAI, ok
from helpers import category_and_batch, descriptions_json, settings

from agfsync.core.io import read_json

WORDS = ["a", "red", "fox", "in", "the", "snow", "two", "cats", "on", "sofa", "city", "at", "night"]
TEXTS = ["A red fox in the snow", "two cats on a sofa", "a city at night, in the snow", "fox"]


@pytest.fixture(scope="module")
def tiny_bge(tmp_path_factory):
    """A BertModel with bge's layout (no pooler is used) and a WordPiece vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizer

    out = tmp_path_factory.mktemp("bge")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, ",", "."]
    vocab += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + list("bdeghjkmpquvwxyz")
    (out / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(dict.fromkeys(vocab)), hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37, max_position_embeddings=64))
    model.save_pretrained(out, safe_serialization=True)
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    return out


def test_bge_embedding_is_the_normalised_cls_state_whatever_the_batch(tiny_bge):
    from transformers import AutoModel, AutoTokenizer

    from agfsync.models.text_embed import bge_embedder

    rows = bge_embedder(str(tiny_bge), device="cpu")(TEXTS)
    assert rows.shape == (4, 32) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-6)

    # the reference: bge's model card, one sentence at a time (no padding to get wrong)
    model, tokenizer = AutoModel.from_pretrained(str(tiny_bge)).eval(), AutoTokenizer.from_pretrained(str(tiny_bge))
    with torch.no_grad():
        for text, row in zip(TEXTS, rows):
            cls = model(**tokenizer([text], return_tensors="pt")).last_hidden_state[:, 0]
            assert np.allclose(row, torch.nn.functional.normalize(cls, dim=-1)[0].numpy(), atol=1e-5), text
    # batches of one pad nothing; batches of 4 pad the short ones: the same rows
    assert np.allclose(bge_embedder(str(tiny_bge), device="cpu", batch_size=1)(TEXTS), rows, atol=1e-5)
    assert bge_embedder(str(tiny_bge), device="cpu")([]).shape == (0, 32)


def scripted(body, seen):
    cat, batch = category_and_batch(body)
    return ok(descriptions_json(cat, batch, 4))


@pytest.mark.parametrize("embedder", ["bge", "ngram"])
def test_the_prompts_summary_records_the_embedder_and_its_model(embedder, demo_config, api_key, tiny_bge, tmp_path):
    from agfsync.stages.prompts import write_prompts

    with FakeOpenAI(scripted) as server:
        cfg = demo_config
        cfg["llm_cache_dir"] = str(tmp_path / "cache")
        cfg["prompts"].update({"categories": ["Animals", "Plants"], "per_category": 4, "descriptions_per_request": 4,
                               "max_requests_per_category": 2, "llm": live_llm(server.base_url),
                               "dedup": {"threshold": 1.0, "embedder": embedder, "model": str(tiny_bge)}})  # a random BERT: every cosine is near 1
        summary = write_prompts(settings(cfg, "prompts_generate"), tmp_path / "p.jsonl", tmp_path / "s.json")
    model = str(tiny_bge) if embedder == "bge" else None
    assert summary["dedup"] == {"threshold": 1.0, "embedder": embedder, "model": model}
    assert read_json(tmp_path / "s.json")["dedup"] == summary["dedup"] and summary["num_prompts"] == 8


def test_the_paper_config_deduplicates_with_the_authors_bge(repo):
    from agfsync.core.config import load_config

    dedup = load_config(repo / "config" / "config.yaml")["prompts"]["dedup"]
    assert dedup == {"threshold": 0.9, "embedder": "bge", "model": "BAAI/bge-large-en-v1.5"}
