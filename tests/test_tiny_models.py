"""Tiny offline models: deterministic builds, real on-disk formats, loaded by the same
loaders as the real checkpoints, with the structure later stages rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agfsync.models import loaders as models
from agfsync.demo.tiny_models import build_all, build_clip_tokenizer

from conftest import REPO

REPO_DEMO_RESPONSES = REPO / "data" / "demo" / "llm_responses.jsonl"


def test_builds_are_byte_identical(tiny_models, tmp_path):
    manifest = json.loads((tiny_models / "MANIFEST.json").read_text())
    again = build_all(tmp_path / "again", families=("sd1", "sdxl", "blip2", "hps"))
    for family in again["families"]:
        assert again["families"][family]["files"] == manifest["families"][family]["files"], family


def test_weights_are_safetensors_or_plain_state_dicts(tiny_models):
    files = json.loads((tiny_models / "MANIFEST.json").read_text())["families"]
    names = [name for family in files.values() for name in family["files"]]
    assert "sd1/unet/diffusion_pytorch_model.safetensors" in names
    assert "sdxl/text_encoder_2/model.safetensors" in names
    assert "blip2/model.safetensors" in names and "clip/model.safetensors" in names
    assert not [n for n in names if n.endswith(".bin")]
    # The two upstream .pt/.pth formats load with weights_only=True.
    head = torch.load(tiny_models / "aesthetic/head.pth", weights_only=True)
    assert list(head) == [f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias")]
    hps = torch.load(tiny_models / "hps/HPS_tiny.pt", weights_only=True)
    assert list(hps) == ["state_dict"]


def test_sd1_pipeline_is_deterministic(tiny_models):
    pipe = models.load_sd_pipeline(str(tiny_models / "sd1"), "sd1", device="cpu")
    assert pipe.vae_scale_factor == 8 and pipe.tokenizer.model_max_length == 77

    def draw(seed):
        generator = torch.Generator().manual_seed(seed)
        return np.asarray(pipe("a red fox", num_inference_steps=2, height=64, width=64, generator=generator).images[0])

    a, b, c = draw(1), draw(1), draw(2)
    assert a.shape == (64, 64, 3) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_sdxl_pipeline_has_two_encoders_pooled_embedding_and_time_ids(tiny_models):
    pipe = models.load_sd_pipeline(str(tiny_models / "sdxl"), "sdxl", device="cpu")
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.unet.config.addition_embed_type == "text_time"
    prompt_embeds, _, pooled, _ = pipe.encode_prompt("a red fox", device="cpu", do_classifier_free_guidance=False)
    assert prompt_embeds.shape == (1, 77, 64)  # 32 + 32: both encoders' hidden states
    assert pooled.shape == (1, 32)
    time_ids = pipe._get_add_time_ids((64, 64), (0, 0), (64, 64), dtype=torch.float32,
                                      text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert time_ids.tolist() == [[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]
    image = pipe("a red fox", num_inference_steps=2, height=64, width=64,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_clip_truncates_to_77_tokens(tiny_models):
    model, processor, _ = models.load_clip(str(tiny_models / "clip"), device="cpu")
    long_text = " ".join(["meadow"] * 200)
    tokens = processor.tokenizer([long_text, "a cat"], padding=True, truncation=True, return_tensors="pt")
    assert tokens.input_ids.shape == (2, 77)
    features = model.get_text_features(**tokens)
    features = getattr(features, "pooler_output", features)
    assert features.shape == (2, 32)


def test_clip_tokenizer_knows_corpus_words_and_encodes_anything():
    tokenizer = build_clip_tokenizer()
    ids = tokenizer("a red fox").input_ids
    assert len(ids) == 5  # <start> a red fox <end>: one token per known word
    ids = tokenizer("Zürich 42!").input_ids  # bytes outside the corpus still encode, never as <unk>
    assert tokenizer.unk_token_id not in ids[1:-1]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "zürich 4 2 !"  # CLIP splits digits, as the real one


def test_blip2_has_single_token_yes_and_no(tiny_models):
    model, processor, _ = models.load_blip2(str(tiny_models / "blip2"), device="cpu")
    yes, no = (processor.tokenizer(word, add_special_tokens=False).input_ids for word in ("yes", "no"))
    assert len(yes) == len(no) == 1 and yes != no
    # As flan-t5: the LM head is not tied to the input embeddings.
    assert model.language_model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    inputs = processor(images=[image], text=["Question: is there a fox? Answer:"], return_tensors="pt")
    image_token = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert int((inputs.input_ids == image_token).sum()) == model.config.num_query_tokens == 4
    decoder = torch.zeros((1, 1), dtype=torch.long)
    logits = model(**inputs, decoder_input_ids=decoder).logits
    assert logits.shape == (1, 1, model.config.text_config.vocab_size)


def test_aesthetic_predictor_loads_head_and_checks_dims(tiny_models, tmp_path):
    model, image_processor, _ = models.load_aesthetic(
        str(tiny_models / "aesthetic/backbone"), str(tiny_models / "aesthetic/head.pth"), device="cpu")
    dims = [layer.in_features for layer in model.head.layers if isinstance(layer, torch.nn.Linear)]
    assert dims == [32, 64, 32, 16, 8]
    pixels = image_processor(images=[np.zeros((40, 40, 3), np.uint8)] * 2, return_tensors="pt").pixel_values
    assert pixels.shape == (2, 3, 28, 28) and model(pixels).shape == (2,)
    torch.save({"linear.weight": torch.zeros(1, 32)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not an aesthetic-predictor state dict: missing layers.0.weight"):
        models.load_aesthetic(str(tiny_models / "aesthetic/backbone"), str(tmp_path / "bad.pth"), device="cpu")


def test_hps_model_loads_through_open_clip(tiny_models):
    model, tokenizer, _ = models.load_hps(
        "agfsync-tiny-ViT", str(tiny_models / "hps/HPS_tiny.pt"),
        model_config=str(tiny_models / "hps/agfsync-tiny-ViT.json"), device="cpu")
    text = model.encode_text(tokenizer(["a photo of a cat"]))
    image = model.encode_image(torch.zeros(1, 3, 32, 32))
    assert text.shape == image.shape == (1, 32)


def test_clip_text_embedder_for_dedup(tiny_models):
    from agfsync.models.text_embed import clip_text_embedder

    embed = clip_text_embedder(str(tiny_models / "clip"), device="cpu")
    vectors = embed(["a red fox", "a red fox", "three ducklings on a pond"])
    assert vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(vectors[0] @ vectors[1]) == pytest.approx(1.0, abs=1e-5)


def test_prompt_stage_dedups_with_the_clip_text_tower(tiny_models, demo_config, tmp_path):
    """The default embedder path of write_prompts: scores.clip.model's text tower."""
    from agfsync.core.io import read_jsonl
    from agfsync.core.sections import Settings
    from agfsync.stages.prompts import write_prompts

    cfg = demo_config
    cfg["prompts"]["dedup"]["embedder"] = "clip"
    cfg["prompts"]["dedup"]["threshold"] = 0.999999  # a random tower: only identical texts are this close
    cfg["scores"]["clip"]["model"] = str(tiny_models / "clip")
    cfg["prompts"]["llm"]["responses"] = str(REPO_DEMO_RESPONSES)
    summary = write_prompts(Settings.from_dict(cfg), tmp_path / "p.jsonl", tmp_path / "s.json")
    assert summary["dedup"]["embedder"] == "clip"
    assert len(read_jsonl(tmp_path / "p.jsonl")) == 36
    # The exact duplicate is caught by its normalised text before any embedding is compared.
    assert summary["per_category"]["Natural Landscapes"]["exact_duplicates"] == 1


def test_clip_tokenizer_makes_every_listed_word_one_token():
    # Chained per-word merges used to let one word's merges pre-empt another's: with the
    # world's vocabulary "orange" became or|an|ge and 12% of captions overflowed 32 tokens.
    from agfsync.models.tokenizers import clip_tokenizer
    from agfsync.world.grammar import all_words

    words = all_words()
    tokenizer = clip_tokenizer(words, 32)
    assert {w: len(tokenizer.tokenize(w)) for w in words if len(tokenizer.tokenize(w)) != 1} == {}
    ids = tokenizer("a big orange round dot together with a violet box on a plain background").input_ids
    assert len(ids) == 2 + 14  # <start>, 14 words, <end>
