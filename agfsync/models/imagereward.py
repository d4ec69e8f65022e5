"""ImageReward (Xu et al. 2023, github THUDM/ImageReward) as an evaluation-metric scorer.

What it computes: for each image and one prompt, the released ImageReward-v1.0 reward

    r = MLP(BLIP_text_encoder(prompt tokens, cross-attending to BLIP_ViT(image))[:, 0])
    reward = (r - MEAN) / STD,   MEAN = 0.16717362830052426, STD = 1.0333394966054072

Sources (THUDM/ImageReward): ImageReward/ImageReward.py (class ImageReward: `score`,
`inference_rank`, `_transform`, `MLP`, the mean/std), ImageReward/utils.py (`load`: the hub
files ImageReward.pt and med_config.json of THUDM/ImageReward, loaded into ImageReward),
ImageReward/models/BLIP/blip_pretrain.py (BLIP_Pretrain: ViT 'large' at 224 px, text encoder
BertModel(med_config, add_pooling_layer=False) with encoder_width set to the ViT width),
ImageReward/models/BLIP/blip.py (`init_tokenizer`, `create_vit`), .../BLIP/vit.py
(VisionTransformer), .../BLIP/med.py (the BERT with cross-attention).

Conventions, all as in those files:
- checkpoint: a plain state dict of ImageReward: `blip.visual_encoder.*` (timm-style ViT:
  cls_token, pos_embed, patch_embed.proj, blocks.N.{norm1, attn.qkv (fused q|k|v, with bias),
  attn.proj, norm2, mlp.fc1, mlp.fc2}, norm), `blip.text_encoder.*` (med.py BertModel: word and
  position embeddings only, no token types, no pooler), `mlp.layers.{0,2,4,6,7}` (Linear,
  Dropout, Linear, Dropout, Linear, Dropout, Linear, Linear; 768-1024-128-64-16-1, no
  activations). `blip.vision_proj.*`, `blip.text_proj.*` (BLIP_Pretrain's contrastive heads)
  and `blip.text_encoder.embeddings.position_ids` (a buffer) are in the file and unused. Any
  other difference is an error naming the file and the keys (upstream loads with
  strict=False and would silently keep random weights).
- vision tower (create_vit('large', 224)): ViT-L/16, width 1024, 24 pre-norm blocks, 16
  heads, MLP 4096, exact GELU, LayerNorm eps 1e-6, a final LayerNorm; all tokens (CLS
  first) are the image embeddings. Here: transformers BlipVisionModel (its
  last_hidden_state is post_layernorm(encoder output), the same computation).
- text tower: med_config.json (bert-base: 768, 12 layers, 12 heads, 3072, eps 1e-12, gelu,
  vocab 30524, add_cross_attention), post-norm BERT layers with self-attention, then
  cross-attention to the image embeddings (key/value width = the ViT width, 1024: BLIP
  overrides med_config's encoder_width), then the feed-forward. Here: transformers
  BlipTextModel (is_decoder config so the cross-attention layers exist; called as an
  encoder: bidirectional self-attention), whose key names are med.py's.
- tokenizer: BLIP's, i.e. bert-base-uncased plus the special tokens '[DEC]' (bos, id 30522)
  and '[ENC]' (id 30523); the prompt is tokenized with padding='max_length',
  truncation=True, max_length=35: [CLS] prompt [SEP] [PAD]... The first token stays [CLS]
  (ImageReward does not replace it by [ENC] as BLIP's ITM head does); the padding mask is
  the self-attention mask; the image mask is all ones. Masked scores: med.py adds -10000,
  transformers the dtype's minimum; in fp32 both give exactly zero attention weight.
- preprocessing: Resize(224, bicubic) of the shorter side (longer side int(224*long/short)),
  CenterCrop(224) (offsets int(round(diff / 2))), then RGB, [0, 1], normalised with the
  OpenAI CLIP mean/std (torchvision's order: resize and crop happen in the image's own mode).
- reward: the MLP on the [CLS] output, then (r - MEAN) / STD; the network runs in fp32 on
  every device (as upstream), the normalisation is done in float64 on its fp32 output
  (upstream: in fp32; the difference is below 1e-7), returned as float64.
- key names of the released file are those the upstream modules produce (read from the
  source above); the file itself was not inspected here.

Our extensions: med_config.json may hold "vision_config" (hidden_size, num_hidden_layers,
num_attention_heads, intermediate_size, image_size, patch_size) and "mlp_dims" (six widths);
the released file has neither, so the BLIP 'large' ViT at 224 px and 768-1024-128-64-16-1
apply. Only the tiny test model (agfsync.demo.tiny_rewards) sets them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agfsync.models.loaders import AestheticMLP, pick_device

MEAN, STD = 0.16717362830052426, 1.0333394966054072
MAX_LENGTH = 35
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
             "image_size": 224, "patch_size": 16}
VIT_LAYER_NORM_EPS = 1e-6  # vit.py: partial(nn.LayerNorm, eps=1e-6)
MLP_DIMS = (768, 1024, 128, 64, 16, 1)
UNUSED_KEYS = re.compile(r"blip\.(vision_proj|text_proj)\.(weight|bias)|blip\.text_encoder\.embeddings\.position_ids")
_MLP_LINEARS = (0, 2, 4, 6, 7)

# Original key <-> our key. {n}: a layer index, {p}: weight or bias, {rest}: anything.
_RULES = [
    ("blip.visual_encoder.cls_token", "vision.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj.{p}", "vision.embeddings.patch_embedding.{p}"),
    ("blip.visual_encoder.blocks.{n}.norm1.{p}", "vision.encoder.layers.{n}.layer_norm1.{p}"),
    ("blip.visual_encoder.blocks.{n}.attn.qkv.{p}", "vision.encoder.layers.{n}.self_attn.qkv.{p}"),
    ("blip.visual_encoder.blocks.{n}.attn.proj.{p}", "vision.encoder.layers.{n}.self_attn.projection.{p}"),
    ("blip.visual_encoder.blocks.{n}.norm2.{p}", "vision.encoder.layers.{n}.layer_norm2.{p}"),
    ("blip.visual_encoder.blocks.{n}.mlp.fc1.{p}", "vision.encoder.layers.{n}.mlp.fc1.{p}"),
    ("blip.visual_encoder.blocks.{n}.mlp.fc2.{p}", "vision.encoder.layers.{n}.mlp.fc2.{p}"),
    ("blip.visual_encoder.norm.{p}", "vision.post_layernorm.{p}"),
    ("blip.text_encoder.{rest}", "text.{rest}"),  # med.py and BlipTextModel share the key names
    ("mlp.layers.{n}.{p}", "head.layers.{n}.{p}"),
]
_FIELDS = {"n": r"(?P<n>\d+)", "p": r"(?P<p>weight|bias)", "rest": r"(?P<rest>.+)"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", template)
    return re.compile("".join(_FIELDS[part] if i % 2 else re.escape(part) for i, part in enumerate(parts)))


_FORWARD = [(_compile(src), dst) for src, dst in _RULES]
_BACKWARD = [(_compile(dst), src) for src, dst in _RULES]


def _rename(key: str, rules) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(key)
        if match:
            return template.format(**match.groupdict())
    return None


def convert_state_dict(original: dict) -> dict:
    """ImageReward.pt keys -> our module keys (vision.* BlipVisionModel, text.* BlipTextModel,
    head.* the MLP). Tensors are shared, not copied; the fused qkv of BLIP's ViT maps onto
    BlipAttention's fused qkv unchanged (both split it as q|k|v, heads inner). Unused keys
    (UNUSED_KEYS) are dropped; keys that match no rule are kept under their original name,
    so that a strict load reports them."""
    out = {}
    for key, value in original.items():
        if UNUSED_KEYS.fullmatch(key):
            continue
        out[_rename(key, _FORWARD) or key] = value
    return out


def original_key(key: str) -> str:
    """Our module key -> its ImageReward.pt name (the inverse of convert_state_dict)."""
    return _rename(key, _BACKWARD) or key


# ----------------------------------------------------------------------------- preprocessing


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """torchvision Resize(size, BICUBIC) + CenterCrop(size) on a PIL image, then RGB."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return image.crop((left, top, left + size, top + size)).convert("RGB")


def preprocess(images, size: int) -> np.ndarray:
    """(B, 3, size, size) float32: resize_center_crop, /255, OpenAI CLIP mean/std."""
    arrays = [np.asarray(resize_center_crop(image, size), dtype=np.float32) / np.float32(255.0) for image in images]
    batch = np.stack(arrays).transpose(0, 3, 1, 2)
    mean = np.asarray(OPENAI_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(OPENAI_STD, dtype=np.float32)[None, :, None, None]
    return np.ascontiguousarray((batch - mean) / std)


# ----------------------------------------------------------------------------- model


class ImageRewardModel(torch.nn.Module):
    """BLIP ViT + BLIP text encoder with cross-attention + the reward MLP (unnormalised)."""

    def __init__(self, vision_config, text_config, mlp_dims):
        from transformers import BlipTextModel, BlipVisionModel

        super().__init__()
        self.vision = BlipVisionModel(vision_config)
        self.text = BlipTextModel(text_config, add_pooling_layer=False)
        self.head = AestheticMLP(tuple(mlp_dims))  # the same layer layout as ImageReward's MLP

    def forward(self, pixel_values, input_ids, attention_mask) -> torch.Tensor:
        image_embeds = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=image_mask, is_decoder=False)
        return self.head(text.last_hidden_state[:, 0, :].float())[:, 0]


def _configs(med: dict, tokenizer):
    """BlipVisionConfig, BlipTextConfig and the MLP widths from a med_config.json dict."""
    from transformers import BlipTextConfig, BlipVisionConfig

    vision = {**VIT_LARGE, **med.get("vision_config", {})}
    vision_config = BlipVisionConfig(**vision, hidden_act="gelu", layer_norm_eps=VIT_LAYER_NORM_EPS,
                                     attention_dropout=0.0)
    if not med.get("add_cross_attention", False):
        raise ValueError("med_config: ImageReward's text encoder needs add_cross_attention: true")
    if med.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"med_config: position_embedding_type {med['position_embedding_type']!r} is not supported")
    text_config = BlipTextConfig(
        vocab_size=med["vocab_size"], hidden_size=med["hidden_size"], intermediate_size=med["intermediate_size"],
        num_hidden_layers=med["num_hidden_layers"], num_attention_heads=med["num_attention_heads"],
        max_position_embeddings=med["max_position_embeddings"], hidden_act=med.get("hidden_act", "gelu"),
        layer_norm_eps=med.get("layer_norm_eps", 1e-12), pad_token_id=med.get("pad_token_id", 0),
        bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id, eos_token_id=tokenizer.sep_token_id,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        encoder_hidden_size=vision_config.hidden_size,  # BLIP_Pretrain: encoder_width = vision_width
        is_decoder=True,  # builds the cross-attention layers; forward is called with is_decoder=False
    )
    mlp_dims = tuple(med.get("mlp_dims", MLP_DIMS))
    if len(mlp_dims) != 6 or mlp_dims[0] != text_config.hidden_size or mlp_dims[-1] != 1:
        raise ValueError(f"med_config: mlp_dims {mlp_dims} must be (text hidden size, 4 widths, 1)")
    return vision_config, text_config, mlp_dims


def blip_tokenizer(tokenizer: str):
    """BLIP's init_tokenizer: a BERT tokenizer plus bos '[DEC]' and the extra special '[ENC]'."""
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(tokenizer)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"extra_special_tokens": ["[ENC]"]})
    return tok


def _read_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"ImageReward checkpoint {path}: expected a state dict of tensors (ImageReward.pt)")
    return state


def _first(keys, n: int = 5) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _check_keys(original: dict, model: torch.nn.Module, path: Path) -> None:
    """Compare in the checkpoint's own names: missing and unexpected keys, then shapes."""
    expected = {original_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    present = {k for k in original if not UNUSED_KEYS.fullmatch(k)}
    missing, unexpected = set(expected) - present, present - set(expected)
    if missing or unexpected:
        raise ValueError(f"ImageReward checkpoint {path} does not match the ImageReward layout: "
                         f"missing keys [{_first(missing)}]; unexpected keys [{_first(unexpected)}]")
    wrong = [f"{k} {tuple(original[k].shape)} != {shape}" for k, shape in expected.items()
             if tuple(original[k].shape) != shape]
    if wrong:
        raise ValueError(f"ImageReward checkpoint {path}: shapes differ from med_config/the ViT config: "
                         f"{_first(wrong, 3)}")


def load_imagereward(checkpoint: str, med_config: str, tokenizer: str, *, device=None) -> ImageRewardScorer:
    """checkpoint: ImageReward.pt path; med_config: med_config.json path; tokenizer: hub id or local dir of a
    BERT tokenizer (bert-base-uncased for the real one); the [DEC]/[ENC] tokens are added as BLIP adds them."""
    device = pick_device(device)
    path = Path(checkpoint)
    tok = blip_tokenizer(tokenizer)
    vision_config, text_config, mlp_dims = _configs(json.loads(Path(med_config).read_text()), tok)
    if len(tok) != text_config.vocab_size:
        raise ValueError(f"ImageReward: tokenizer {tokenizer!r} has {len(tok)} tokens with [DEC] and [ENC], "
                         f"med_config {med_config} says vocab_size {text_config.vocab_size}")
    original = _read_state_dict(path)
    with torch.device("meta"):  # no random init: every tensor comes from the checkpoint
        model = ImageRewardModel(vision_config, text_config, mlp_dims)
    _check_keys(original, model, path)
    model.load_state_dict(convert_state_dict(original), strict=True, assign=True)
    positions = text_config.max_position_embeddings
    model.text.embeddings.position_ids = torch.arange(positions).expand((1, -1))  # non-persistent buffer
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"ImageReward: tensors not loaded from {path}: {_first(left)}")
    model = model.to(device=device, dtype=torch.float32).eval()
    return ImageRewardScorer(model, tok, device, image_size=vision_config.image_size)


class ImageRewardScorer:
    """score(images, prompt): ImageReward rewards, one per image (ImageReward.inference_rank's values)."""

    def __init__(self, model: ImageRewardModel, tokenizer, device, image_size: int = 224, batch_size: int = 32):
        self.model, self.tokenizer, self.device = model, tokenizer, torch.device(device)
        self.image_size, self.batch_size = int(image_size), int(batch_size)

    def tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, 35) input_ids and attention_mask: [CLS] ... [SEP] [PAD]..., first token kept as [CLS]."""
        enc = self.tokenizer(prompt, padding="max_length", truncation=True, max_length=MAX_LENGTH,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def raw_rewards(self, images: list, prompt: str) -> np.ndarray:
        """The MLP's output before normalisation, float32, one per image."""
        for image in images:
            if not isinstance(image, Image.Image):
                raise TypeError(f"ImageReward scores PIL images, got {type(image).__name__}")
        if not images:
            return np.zeros(0, dtype=np.float32)
        input_ids, attention_mask = (t.to(self.device) for t in self.tokenize(prompt))
        out = []
        with torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                pixels = torch.from_numpy(preprocess(chunk, self.image_size)).to(self.device)
                n = pixels.shape[0]
                rewards = self.model(pixels, input_ids.expand(n, -1), attention_mask.expand(n, -1))
                out.append(rewards.float().cpu().numpy())
        return np.concatenate(out)

    def score(self, images: list, prompt: str) -> np.ndarray:
        """float64, one reward per PIL image, normalised as ImageReward: (r - MEAN) / STD."""
        return (self.raw_rewards(list(images), prompt).astype(np.float64) - MEAN) / STD
