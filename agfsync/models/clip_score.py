"""CLIP score (rule candidates_score; evaluation later reuses it).

CLIPScore(I, C) = max(gamma * cos(E_I, E_C), 0), gamma = 100 (Hessel et al. 2021, as
torchmetrics' CLIPScore). The caption is truncated to the model's 77 TOKENS by the
tokenizer, which keeps the end-of-text token CLIP pools from (OpenAI's
clip.tokenize(truncate=True) does the same); the authors' code cut 77 characters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from agfsync.core.sections import CLIPScoreSettings


class CLIPScorer:
    def __init__(self, model, processor, device: torch.device, gamma: float = 100.0):
        self.model, self.processor, self.device, self.gamma = model, processor, device, gamma

    @torch.no_grad()
    def image_features(self, images) -> torch.Tensor:
        pixels = self.processor(images=images, return_tensors="pt").pixel_values.to(self.device, self.model.dtype)
        features = self.model.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.processor.tokenizer(
            texts, padding=True, truncation=True, max_length=self.processor.tokenizer.model_max_length,
            return_tensors="pt",
        ).to(self.device)
        features = self.model.get_text_features(**tokens)
        features = getattr(features, "pooler_output", features)
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def score(self, images, text: str) -> np.ndarray:
        """CLIP score of each image against one caption."""
        cosine = self.image_features(images) @ self.text_features([text]).T
        return torch.clamp(self.gamma * cosine[:, 0], min=0).cpu().numpy().astype(np.float64)


def load_clip_scorer(clip: CLIPScoreSettings, device=None) -> CLIPScorer:
    from agfsync.models.loaders import load_clip

    model, processor, device = load_clip(clip.model, device=device)
    return CLIPScorer(model, processor, device, gamma=clip.gamma)
