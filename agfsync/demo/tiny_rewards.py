"""Tiny random reward models in their upstream on-disk formats (for tests and the demo).

build_imagereward(out) writes what THUDM/ImageReward publishes, scaled down:

  out/ImageReward.pt     torch.save of a state dict in ImageReward's ORIGINAL key layout
                         (blip.visual_encoder.* timm-style ViT, blip.text_encoder.* BLIP med
                         BERT with cross-attention, blip.vision_proj/text_proj and the
                         position_ids buffer as in the real file, mlp.layers.*), so that
                         agfsync.models.imagereward converts it exactly as the real one
  out/med_config.json    the BERT config (hidden 32, 2 layers, 2 heads), plus our
                         "vision_config" (ViT 32 px, patch 8, width 32, 2 blocks) and
                         "mlp_dims" extensions, which the real file lacks
  out/tokenizer/         a tiny lower-casing BERT WordPiece tokenizer built here ([PAD] = 0;
                         the loader adds [DEC] and [ENC] as BLIP does)

The key names and shapes are written out here from the original modules (vit.py, med.py,
ImageReward.py), independently of the converter. Deterministic: a fixed-seed generator, so
two builds give the same bytes. Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

VISION = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
          "image_size": 32, "patch_size": 8}
TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "max_position_embeddings": 40}
MLP_DIMS = (32, 48, 24, 16, 8, 1)  # 768-1024-128-64-16-1 scaled down
PROJ_DIM = 16  # BLIP_Pretrain's embed_dim (256) scaled down: vision_proj / text_proj, unused by ImageReward
WORDS = (
    "a an the of in on at with and or to from by for is are there photo picture painting drawing image "
    "cat dog bird horse car bus tree house city street mountain river sea sky sun moon flower garden "
    "man woman child people red blue green yellow black white orange purple small large old young "
    "two three four sitting standing running flying under above next front behind detailed style art"
).split()


def _generator(name: str):
    import torch

    seed = int.from_bytes(hashlib.sha256(f"agfsync-tiny/{name}".encode()).digest()[:4], "big")
    return torch.Generator().manual_seed(seed)


def build_bert_tokenizer(words=WORDS):
    """A lower-casing BERT WordPiece tokenizer: specials, `words` whole, and every character
    alone and as a continuation (##c), so any ASCII text encodes."""
    from transformers import BertTokenizer

    vocab: dict[str, int] = {}
    for token in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words):
        vocab.setdefault(token, len(vocab))
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,?!'\"-:;()/&":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(f"##{ch}", len(vocab))
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True)
    tokenizer.model_max_length = 512
    return tokenizer


def imagereward_state_dict(vocab_size: int, vision=VISION, text=TEXT, mlp_dims=MLP_DIMS, proj_dim=PROJ_DIM,
                           generator=None) -> dict:
    """Random tensors under ImageReward.pt's key names and shapes (fp32; position_ids int64)."""
    import torch

    g = generator if generator is not None else _generator("imagereward")
    state: dict = {}

    def linear(prefix: str, out_dim: int, in_dim: int) -> None:
        state[f"{prefix}.weight"] = torch.randn(out_dim, in_dim, generator=g) / in_dim**0.5
        state[f"{prefix}.bias"] = 0.1 * torch.randn(out_dim, generator=g)

    def norm(prefix: str, dim: int) -> None:
        state[f"{prefix}.weight"] = 1.0 + 0.1 * torch.randn(dim, generator=g)
        state[f"{prefix}.bias"] = 0.1 * torch.randn(dim, generator=g)

    # vit.py VisionTransformer (blip.visual_encoder)
    d, p, m = vision["hidden_size"], vision["patch_size"], vision["intermediate_size"]
    v = "blip.visual_encoder"
    state[f"{v}.cls_token"] = 0.5 * torch.randn(1, 1, d, generator=g)
    state[f"{v}.pos_embed"] = 0.5 * torch.randn(1, (vision["image_size"] // p) ** 2 + 1, d, generator=g)
    state[f"{v}.patch_embed.proj.weight"] = torch.randn(d, 3, p, p, generator=g) / (3 * p * p) ** 0.5
    state[f"{v}.patch_embed.proj.bias"] = 0.1 * torch.randn(d, generator=g)
    for i in range(vision["num_hidden_layers"]):
        b = f"{v}.blocks.{i}"
        norm(f"{b}.norm1", d)
        linear(f"{b}.attn.qkv", 3 * d, d)
        linear(f"{b}.attn.proj", d, d)
        norm(f"{b}.norm2", d)
        linear(f"{b}.mlp.fc1", m, d)
        linear(f"{b}.mlp.fc2", d, m)
    norm(f"{v}.norm", d)

    # med.py BertModel(add_pooling_layer=False) (blip.text_encoder), cross-attention width = d
    h, inter, positions = text["hidden_size"], text["intermediate_size"], text["max_position_embeddings"]
    t = "blip.text_encoder"
    state[f"{t}.embeddings.position_ids"] = torch.arange(positions).expand((1, -1)).clone()
    state[f"{t}.embeddings.word_embeddings.weight"] = 0.5 * torch.randn(vocab_size, h, generator=g)
    state[f"{t}.embeddings.position_embeddings.weight"] = 0.5 * torch.randn(positions, h, generator=g)
    norm(f"{t}.embeddings.LayerNorm", h)
    for i in range(text["num_hidden_layers"]):
        layer = f"{t}.encoder.layer.{i}"
        for part, kv_dim in (("attention", h), ("crossattention", d)):
            linear(f"{layer}.{part}.self.query", h, h)
            linear(f"{layer}.{part}.self.key", h, kv_dim)
            linear(f"{layer}.{part}.self.value", h, kv_dim)
            linear(f"{layer}.{part}.output.dense", h, h)
            norm(f"{layer}.{part}.output.LayerNorm", h)
        linear(f"{layer}.intermediate.dense", inter, h)
        linear(f"{layer}.output.dense", h, inter)
        norm(f"{layer}.output.LayerNorm", h)

    # BLIP_Pretrain's contrastive projections (in the released file, unused by the reward)
    linear("blip.vision_proj", proj_dim, d)
    linear("blip.text_proj", proj_dim, h)
    # ImageReward.py MLP: Linear, Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear
    for index, (in_dim, out_dim) in zip((0, 2, 4, 6, 7), zip(mlp_dims, mlp_dims[1:])):
        linear(f"mlp.layers.{index}", out_dim, in_dim)
    return state


def med_config(vocab_size: int, vision=VISION, text=TEXT, mlp_dims=MLP_DIMS) -> dict:
    """The released med_config.json's fields at tiny sizes, plus our two extensions."""
    return {
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": text["hidden_size"], "initializer_range": 0.02,
        "intermediate_size": text["intermediate_size"], "layer_norm_eps": 1e-12,
        "max_position_embeddings": text["max_position_embeddings"], "model_type": "bert",
        "num_attention_heads": text["num_attention_heads"], "num_hidden_layers": text["num_hidden_layers"],
        "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": vocab_size,
        "encoder_width": vision["hidden_size"], "add_cross_attention": True,
        "vision_config": dict(vision), "mlp_dims": list(mlp_dims),
    }


def build_imagereward(out: Path) -> None:
    """Write out/ImageReward.pt, out/med_config.json and out/tokenizer/ (see the module docstring)."""
    import torch

    from agfsync.models.imagereward import blip_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    build_bert_tokenizer().save_pretrained(out / "tokenizer")
    vocab_size = len(blip_tokenizer(str(out / "tokenizer")))  # with [DEC] and [ENC], as BLIP's
    (out / "med_config.json").write_text(json.dumps(med_config(vocab_size), indent=2) + "\n")
    torch.save(imagereward_state_dict(vocab_size), out / "ImageReward.pt")
