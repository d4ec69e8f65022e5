"""The reward models of stage 6 (agfsync.core.rewards), behind one interface:
`load_reward_scorer(reward, section, device)` returns an object whose `score(images, prompt)`
gives one float64 per PIL image.

  pickscore    PickScore (yuvalkirstain/PickScore_v1, its model card's computation): the processor
               of laion/CLIP-ViT-H-14-laion2B-s32B-b79K (resize 224 bicubic, centre crop, OpenAI
               mean/std; text padded and truncated to 77 tokens), L2-normalised image and text
               embeddings of the CLIPModel, score = logit_scale.exp() * cos (about 0..30; not x100)
  imagereward  agfsync.models.imagereward
  hpsv21       agfsync.models.hps with the HPS v2.1 checkpoint (100 * cos)
  vqascore     agfsync.models.vqascore (backend local; the endpoint backend is agfsync.stages.vqascore_endpoint)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class PickScoreScorer:
    def __init__(self, model, processor, device: torch.device):
        self.model, self.processor, self.device = model, processor, device

    @torch.no_grad()
    def score(self, images, prompt: str) -> np.ndarray:
        image_inputs = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        text_inputs = self.processor(text=[prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
        image = self.model.get_image_features(pixel_values=image_inputs["pixel_values"].to(self.device, self.model.dtype))
        text = self.model.get_text_features(**{k: v.to(self.device) for k, v in text_inputs.items()})
        image = torch.nn.functional.normalize(getattr(image, "pooler_output", image).float(), dim=-1)
        text = torch.nn.functional.normalize(getattr(text, "pooler_output", text).float(), dim=-1)
        scale = self.model.logit_scale.exp().float()
        return (scale * (image @ text.T)[:, 0]).cpu().numpy().astype(np.float64)


def load_pickscore(model: str, processor: str, *, device=None) -> PickScoreScorer:
    """PickScore: a transformers CLIPModel and the processor of its base model (hub ids or local directories)."""
    from transformers import AutoProcessor, CLIPModel

    from agfsync.models.loaders import pick_device

    device = pick_device(device)
    clip = CLIPModel.from_pretrained(model, dtype=torch.float32).to(device).eval()
    return PickScoreScorer(clip, AutoProcessor.from_pretrained(processor), device)


def load_reward_scorer(reward: str, section: Any, device=None):
    """The scorer of one reward model from its settings (agfsync.core.sections, eval.<reward>)."""
    from agfsync.models.loaders import pick_device

    device = pick_device(device)
    if reward == "pickscore":
        return load_pickscore(section.model, section.processor, device=device)
    if reward == "hpsv21":
        from agfsync.models.hps import HPSScorer
        from agfsync.models.loaders import load_hps

        model, tokenizer, device = load_hps(section.model, section.checkpoint, device=device,
                                            model_config=section.model_config)
        return HPSScorer(model, tokenizer, device, "v2.1")
    if reward == "imagereward":
        from agfsync.models.imagereward import load_imagereward

        return load_imagereward(section.checkpoint, section.med_config, section.tokenizer, device=device)
    if reward == "vqascore":
        from agfsync.models.vqascore import load_vqascore

        return load_vqascore(section.model, device=device, question=section.question, answer=section.answer,
                             batch_size=section.batch_size)
    raise ValueError(f"unknown reward model {reward!r} (known: pickscore, imagereward, hpsv21, vqascore)")
