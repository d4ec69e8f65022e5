"""ImageReward scorer (agfsync.models.imagereward) on the tiny checkpoint of
agfsync.demo.tiny_rewards, which is written in the released ImageReward.pt key layout.

The main check is an independent forward written here in plain torch (float64) from the
ORIGINAL state dict names, following THUDM/ImageReward's vit.py (pre-norm blocks, fused
qkv, LayerNorm eps 1e-6, final norm), med.py (post-norm BERT layers: self-attention with
the -10000 padding mask, cross-attention to all image tokens, feed-forward) and
ImageReward.py (MLP on the [CLS] output, then (r - mean) / std).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from agfsync.demo.tiny_rewards import build_imagereward
from agfsync.models import imagereward as ir

PROMPT = "a red cat sitting on the house"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imagereward") / "model"
    build_imagereward(out)
    return out


@pytest.fixture(scope="module")
def scorer(tiny):
    return ir.load_imagereward(str(tiny / "ImageReward.pt"), str(tiny / "med_config.json"), str(tiny / "tokenizer"),
                               device="cpu")


def _images(n: int = 3) -> list:
    rng = np.random.default_rng(7)
    sizes = [(50, 37), (29, 64), (32, 45), (40, 40)]  # (height, width): tall, wide, odd crop, square
    return [Image.fromarray(rng.integers(0, 256, (*sizes[i % 4], 3), dtype=np.uint8)) for i in range(n)]


# ----------------------------------------------------------------------------- reference forward


def _ln(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"], eps)


def _lin(x, sd, prefix):
    return x @ sd[f"{prefix}.weight"].T + sd[f"{prefix}.bias"]


def _heads(x, n):
    return x.reshape(*x.shape[:2], n, -1).transpose(1, 2)


def reference_vit(sd, pixels, heads, blocks):
    v = "blip.visual_encoder"
    weight = sd[f"{v}.patch_embed.proj.weight"]
    x = F.conv2d(pixels, weight, sd[f"{v}.patch_embed.proj.bias"], stride=weight.shape[-1]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{v}.cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd[f"{v}.pos_embed"][:, : x.shape[1]]
    for i in range(blocks):
        b = f"{v}.blocks.{i}"
        y = _ln(x, sd, f"{b}.norm1", 1e-6)
        batch, tokens, width = y.shape
        qkv = _lin(y, sd, f"{b}.attn.qkv").reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attn = (qkv[0] @ qkv[1].transpose(-2, -1) * (width // heads) ** -0.5).softmax(-1)
        x = x + _lin((attn @ qkv[2]).transpose(1, 2).reshape(batch, tokens, width), sd, f"{b}.attn.proj")
        y = _ln(x, sd, f"{b}.norm2", 1e-6)
        x = x + _lin(F.gelu(_lin(y, sd, f"{b}.mlp.fc1")), sd, f"{b}.mlp.fc2")
    return _ln(x, sd, f"{v}.norm", 1e-6)


def reference_text(sd, ids, mask, image_embeds, heads, layers, eps):
    t = "blip.text_encoder"
    positions = sd[f"{t}.embeddings.position_embeddings.weight"][: ids.shape[1]]  # no token-type embeddings
    x = sd[f"{t}.embeddings.word_embeddings.weight"][ids] + positions
    x = _ln(x, sd, f"{t}.embeddings.LayerNorm", eps)
    pad_mask = (1.0 - mask[:, None, None, :].to(x.dtype)) * -10000.0

    def attention(prefix, hidden, context, add):
        q = _heads(_lin(hidden, sd, f"{prefix}.self.query"), heads)
        k = _heads(_lin(context, sd, f"{prefix}.self.key"), heads)
        v = _heads(_lin(context, sd, f"{prefix}.self.value"), heads)
        probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + add).softmax(-1)
        ctx = (probs @ v).transpose(1, 2).reshape(hidden.shape)
        return _ln(_lin(ctx, sd, f"{prefix}.output.dense") + hidden, sd, f"{prefix}.output.LayerNorm", eps)

    for i in range(layers):
        layer = f"{t}.encoder.layer.{i}"
        x = attention(f"{layer}.attention", x, x, pad_mask)
        x = attention(f"{layer}.crossattention", x, image_embeds, 0.0)  # image mask: all ones
        y = _lin(F.gelu(_lin(x, sd, f"{layer}.intermediate.dense")), sd, f"{layer}.output.dense")
        x = _ln(y + x, sd, f"{layer}.output.LayerNorm", eps)
    return x


def reference_rewards(tiny: Path, pixels, ids, mask, normalise=True) -> np.ndarray:
    sd = {k: v.double() if v.is_floating_point() else v
          for k, v in torch.load(tiny / "ImageReward.pt", map_location="cpu", weights_only=True).items()}
    med = json.loads((tiny / "med_config.json").read_text())
    vision = med["vision_config"]  # the tiny ViT's geometry (the real file: BLIP's ViT-L/16)
    assert f"blip.visual_encoder.blocks.{vision['num_hidden_layers'] - 1}.norm1.weight" in sd
    assert f"blip.text_encoder.encoder.layer.{med['num_hidden_layers'] - 1}.output.dense.weight" in sd
    image = reference_vit(sd, pixels.double(), vision["num_attention_heads"], vision["num_hidden_layers"])
    text = reference_text(sd, ids, mask, image, med["num_attention_heads"], med["num_hidden_layers"],
                          med["layer_norm_eps"])
    x = text[:, 0]
    for index in (0, 2, 4, 6, 7):  # Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
        x = _lin(x, sd, f"mlp.layers.{index}")
    raw = x[:, 0].numpy()
    return (raw - 0.16717362830052426) / 1.0333394966054072 if normalise else raw


# ----------------------------------------------------------------------------- tests


def test_imagereward_matches_reference_forward_from_original_keys(tiny, scorer):
    images = _images(3)
    scores = scorer.score(images, PROMPT)
    assert scores.dtype == np.float64 and scores.shape == (3,)
    assert np.ptp(scores) > 1e-3  # the image reaches the reward through the cross-attention
    pixels = torch.from_numpy(ir.preprocess(images, scorer.image_size))
    ids, mask = scorer.tokenize(PROMPT)
    expected = reference_rewards(tiny, pixels, ids.expand(3, -1), mask.expand(3, -1))
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    # another prompt (a different padding mask) changes the rewards, and still matches
    other = "two small birds flying above a green tree next to the old house in the city"
    ids2, mask2 = scorer.tokenize(other)
    expected2 = reference_rewards(tiny, pixels, ids2.expand(3, -1), mask2.expand(3, -1))
    np.testing.assert_allclose(scorer.score(images, other), expected2, atol=1e-5, rtol=0)
    assert np.abs(expected2 - expected).max() > 1e-3
    # too small for the tiny numbers to show, so checked directly: vit.py eps 1e-6, med_config's 1e-12
    vision_norms = [m for m in scorer.model.vision.modules() if isinstance(m, torch.nn.LayerNorm)]
    text_norms = [m for m in scorer.model.text.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(vision_norms) == 2 * 2 + 1 and {m.eps for m in vision_norms} == {1e-6}
    assert len(text_norms) == 1 + 2 * 3 and {m.eps for m in text_norms} == {1e-12}


def test_imagereward_normalisation_constants(tiny, scorer):
    assert ir.MEAN == 0.16717362830052426 and ir.STD == 1.0333394966054072  # ImageReward.py: self.mean/self.std
    images = _images(2)
    raw = scorer.raw_rewards(images, PROMPT)
    np.testing.assert_allclose(scorer.score(images, PROMPT), (raw.astype(np.float64) - ir.MEAN) / ir.STD, atol=1e-12)
    pixels = torch.from_numpy(ir.preprocess(images, scorer.image_size))
    ids, mask = scorer.tokenize(PROMPT)
    np.testing.assert_allclose(raw, reference_rewards(tiny, pixels, ids.expand(2, -1), mask.expand(2, -1),
                                                      normalise=False), atol=1e-5, rtol=0)


def test_imagereward_tokenization_as_blip(scorer):
    tok = scorer.tokenizer
    base = len(tok) - 2
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [base, base + 1]  # 30522, 30523 for bert-base-uncased
    assert tok.bos_token == "[DEC]"
    ids, mask = scorer.tokenize("A Red CAT")
    assert ids.shape == mask.shape == (1, ir.MAX_LENGTH)
    words = tok.convert_ids_to_tokens(ids[0, :5].tolist())
    assert words == ["[CLS]", "a", "red", "cat", "[SEP]"]  # lower-cased; [CLS] kept, not replaced by [ENC]
    assert ids[0, 5:].tolist() == [0] * (ir.MAX_LENGTH - 5) and mask[0].tolist() == [1] * 5 + [0] * (ir.MAX_LENGTH - 5)
    long_ids, long_mask = scorer.tokenize(" ".join(["cat"] * 50))
    assert long_ids.shape == (1, ir.MAX_LENGTH) and int(long_mask.sum()) == ir.MAX_LENGTH
    assert long_ids[0, -1].item() == tok.sep_token_id


def test_imagereward_preprocessing_is_resize_bicubic_center_crop(scorer):
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(3)
    cases = [(32, (37, 50)), (32, (64, 29)), (32, (32, 45)), (32, (33, 32)), (224, (213, 300)), (224, (400, 224))]
    for size, (height, width) in cases:
        rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        rgba = Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), "RGBA")
        for image in (rgb, rgba):
            upstream = tv.Compose([  # ImageReward.py _transform(n_px)
                tv.Resize(size, interpolation=tv.InterpolationMode.BICUBIC), tv.CenterCrop(size),
                lambda im: im.convert("RGB"), tv.ToTensor(),
                tv.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
            ])
            ours = ir.preprocess([image], size)
            assert ours.shape == (1, 3, size, size) and ours.dtype == np.float32
            np.testing.assert_allclose(ours[0], upstream(image).numpy(), atol=1e-6, rtol=0)
    # the crop offset rounds as torchvision does: 45 -> 32 leaves 13 columns, left = round(6.5) = 6
    image = Image.fromarray(np.tile(np.arange(45, dtype=np.uint8)[None, :, None], (32, 1, 3)))
    assert np.asarray(ir.resize_center_crop(image, 32))[0, :, 0].tolist() == list(range(6, 38))
    assert scorer.image_size == 32  # the tiny ViT's input size (224 for the real one)


@pytest.mark.parametrize("change", ["remove", "rename"])
def test_imagereward_corrupted_checkpoint_names_file_and_key(tiny, tmp_path, change):
    state = torch.load(tiny / "ImageReward.pt", map_location="cpu", weights_only=True)
    key = "blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"
    value = state.pop(key)
    if change == "rename":
        state[key.replace(".key.", ".k.")] = value
    bad = tmp_path / f"ImageReward-{change}.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError) as err:
        ir.load_imagereward(str(bad), str(tiny / "med_config.json"), str(tiny / "tokenizer"), device="cpu")
    message = str(err.value)
    assert str(bad) in message and re.search(r"missing keys \[[^\]]*" + re.escape(key), message)
    if change == "rename":
        assert re.search(r"unexpected keys \[[^\]]*" + re.escape(key.replace(".key.", ".k.")), message)


def test_imagereward_shape_mismatch_is_an_error(tiny, tmp_path):
    state = torch.load(tiny / "ImageReward.pt", map_location="cpu", weights_only=True)
    state["blip.visual_encoder.pos_embed"] = state["blip.visual_encoder.pos_embed"][:, :5]
    bad = tmp_path / "ImageReward.pt"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=re.escape(str(bad)) + ".*blip.visual_encoder.pos_embed"):
        ir.load_imagereward(str(bad), str(tiny / "med_config.json"), str(tiny / "tokenizer"), device="cpu")


def test_imagereward_builder_is_deterministic(tiny, tmp_path):
    build_imagereward(tmp_path / "again")
    files = sorted(p.relative_to(tiny) for p in tiny.rglob("*") if p.is_file())
    assert Path("ImageReward.pt") in files and Path("med_config.json") in files
    assert files == sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*") if p.is_file())
    for name in files:
        assert (tiny / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name


def test_imagereward_batch_equals_one_at_a_time(scorer):
    images = _images(4)
    batched = scorer.score(images, PROMPT)
    single = np.array([scorer.score([image], PROMPT)[0] for image in images])
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    scorer.batch_size, saved = 3, scorer.batch_size  # chunks of 3 + 1
    try:
        np.testing.assert_allclose(scorer.score(images, PROMPT), batched, atol=1e-5, rtol=0)
    finally:
        scorer.batch_size = saved
    assert scorer.score([], PROMPT).shape == (0,)


def test_imagereward_key_conversion_on_the_real_geometry():
    """The released layout (ViT-L/16 at 224, bert-base med_config with vocab 30524) on the meta device."""
    med = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
           "max_position_embeddings": 512, "vocab_size": 30524, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
           "pad_token_id": 0, "encoder_width": 768, "add_cross_attention": True}
    vision, text, dims = ir._configs(med, SimpleNamespace(bos_token_id=30522, sep_token_id=102))
    assert vision.layer_norm_eps == 1e-6 and text.layer_norm_eps == 1e-12 and text.encoder_hidden_size == 1024
    with torch.device("meta"):
        model = ir.ImageRewardModel(vision, text, dims)
    shapes = {ir.original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["blip.visual_encoder.pos_embed"] == (1, 197, 1024)
    assert shapes["blip.visual_encoder.patch_embed.proj.weight"] == (1024, 3, 16, 16)
    assert shapes["blip.visual_encoder.blocks.23.attn.qkv.weight"] == (3072, 1024)
    assert shapes["blip.visual_encoder.norm.weight"] == (1024,)
    assert shapes["blip.text_encoder.embeddings.word_embeddings.weight"] == (30524, 768)
    assert shapes["blip.text_encoder.encoder.layer.11.crossattention.self.key.weight"] == (768, 1024)
    assert shapes["mlp.layers.0.weight"] == (1024, 768) and shapes["mlp.layers.7.weight"] == (1, 16)
    assert len(shapes) == 4 + 24 * 12 + 2 + 4 + 12 * 26 + 10  # ViT, BERT (no pooler, no token types), MLP
    assert all(k.startswith(("blip.visual_encoder.", "blip.text_encoder.", "mlp.layers.")) for k in shapes)
    # unused keys of the released file are dropped; unknown ones keep their name (a strict load names them)
    converted = ir.convert_state_dict({"blip.vision_proj.weight": 0, "blip.text_encoder.embeddings.position_ids": 0,
                                       "blip.visual_encoder.blocks.3.attn.proj.bias": 1, "blip.other.weight": 2})
    assert converted == {"vision.encoder.layers.3.self_attn.projection.bias": 1, "blip.other.weight": 2}
