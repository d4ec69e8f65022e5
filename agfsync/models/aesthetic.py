"""Aesthetic score: the LAION aesthetic predictor v2 (rule candidates_score).

CLIP ViT-L/14 image embedding, L2-normalised, through the MLP head of
sac+logos+ava1-l14-linearMSE.pth; the head predicts a ~1..10 rating, multiplied by 10
to share the 0..100 scale of the other scores (not clipped: a rating above 10 stays
above 100). The paper's authors used Google VILA (TF-Hub); the LAION predictor is the
PyTorch standard for the same quantity (docs/method.md, AI feedback scores).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from agfsync.core.sections import AestheticScoreSettings

SCALE = 10.0


class AestheticScorer:
    def __init__(self, model, image_processor, device: torch.device):
        self.model, self.image_processor, self.device = model, image_processor, device

    @torch.no_grad()
    def score(self, images) -> np.ndarray:
        pixels = self.image_processor(images=images, return_tensors="pt").pixel_values.to(self.device)
        return (SCALE * self.model(pixels).float()).cpu().numpy().astype(np.float64)


def load_aesthetic_scorer(aesthetic: AestheticScoreSettings, device=None) -> AestheticScorer:
    from agfsync.models.loaders import load_aesthetic

    model, image_processor, device = load_aesthetic(aesthetic.backbone, aesthetic.head, device=device)
    return AestheticScorer(model, image_processor, device)
