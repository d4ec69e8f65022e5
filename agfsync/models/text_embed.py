"""Text embedders for near-duplicate removal in the prompt stage (rule prompts_generate).

All return L2-normalised rows, so a dot product is a cosine similarity.
  bge    BAAI's bge sentence embedder (prompts.dedup.model; the authors' code dedups with
         BAAI/bge-large-en-v1.5 at cosine 0.90): the [CLS] token's last hidden state,
         normalised, as its model card and FlagEmbedding compute it, without the query
         instruction (prompts are compared with prompts, not retrieved).
  clip   the text tower of the CLIP-score model (scores.clip.model): a model the pipeline
         loads anyway. Both import torch when built, not at import.
  ngram  hashed character trigram counts (pure numpy): no model, for the offline demo,
         whose tiny random CLIP gives meaningless similarities.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

NGRAM_DIM = 4096


def _bucket(gram: str) -> int:
    return int.from_bytes(hashlib.blake2b(gram.encode("utf-8"), digest_size=4).digest(), "little") % NGRAM_DIM


def ngram_embed(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(texts), NGRAM_DIM), dtype=np.float32)
    for row, text in enumerate(texts):
        padded = f"  {' '.join(text.lower().split())}  "
        for i in range(len(padded) - 2):
            out[row, _bucket(padded[i : i + 3])] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.maximum(norms, 1e-12)


def bge_embedder(model_path: str, device: str | None = None, batch_size: int = 64):
    """Embed with a bge checkpoint (hub id or local transformers dir): normalised [CLS] states."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from agfsync.models.loaders import pick_device

    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
    max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                               max_length=max_length, return_tensors="pt").to(device)
            cls = model(**tokens).last_hidden_state[:, 0]
            rows.append(torch.nn.functional.normalize(cls.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)

    return embed


def clip_text_embedder(model_path: str, device: str | None = None, batch_size: int = 64):
    """Embed with the text tower of a CLIP checkpoint (HF id or local diffusers/transformers dir)."""
    import torch

    from agfsync.models.loaders import load_clip

    model, processor, device = load_clip(model_path, device=device)

    @torch.no_grad()
    def embed(texts: Sequence[str]) -> np.ndarray:
        rows = []
        for start in range(0, len(texts), batch_size):
            tokens = processor.tokenizer(
                list(texts[start : start + batch_size]), padding=True, truncation=True,
                max_length=processor.tokenizer.model_max_length, return_tensors="pt",
            ).to(device)
            features = model.get_text_features(**tokens)
            features = getattr(features, "pooler_output", features)
            rows.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, model.config.projection_dim), np.float32)

    return embed
