"""Model loaders: one function per family, the only way agfsync loads a model.

Real checkpoints (hub ids in config/config.yaml) and the tiny local ones built by
agfsync.demo.tiny_models (config/tiny.yaml) go through the same functions, from_pretrained
or a state dict, so tests of the tiny models test the real loading path. Weights are
read from safetensors, or with torch.load(weights_only=True) for the two .pt/.pth
formats the upstream projects publish (LAION aesthetic head, HPS v2 checkpoint).

Dtypes: bf16 on CUDA, fp32 on CPU, unless the caller says otherwise.
Used by the prompt stage (CLIP text tower for dedup) and, in later stages, by
generation, scoring, training and evaluation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """None or "auto" (config `device`): CUDA when present, else the CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ----------------------------------------------------------------------------- diffusion


def load_sd_pipeline(pretrained: str, family: str, *, device=None, dtype=None, revision=None, unet=None):
    """SD 1.x (family 'sd1') or SDXL ('sdxl') text-to-image pipeline, safety checker off.
    `unet`: a diffusers UNet directory that replaces the pipeline's (a fine-tuned one)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel

    device = pick_device(device)
    dtype = dtype or default_dtype(device)
    components = {"unet": UNet2DConditionModel.from_pretrained(unet, dtype=dtype)} if unet else {}
    if family == "sd1":
        pipe = StableDiffusionPipeline.from_pretrained(
            pretrained, revision=revision, dtype=dtype, safety_checker=None, requires_safety_checker=False, **components
        )
    elif family == "sdxl":
        pipe = StableDiffusionXLPipeline.from_pretrained(pretrained, revision=revision, dtype=dtype, **components)
    else:
        raise ValueError(f"unknown model family {family!r} (expected 'sd1' or 'sdxl')")
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


# ----------------------------------------------------------------------------- CLIP score


def load_clip(pretrained: str, *, device=None, dtype=None):
    """CLIP model and processor (the CLIP-score model, openai/clip-vit-base-patch16)."""
    from transformers import CLIPModel, CLIPProcessor

    device = pick_device(device)
    model = CLIPModel.from_pretrained(pretrained, dtype=dtype or torch.float32).to(device).eval()
    processor = CLIPProcessor.from_pretrained(pretrained)
    return model, processor, device


# ----------------------------------------------------------------------------- VQA


def load_blip2(pretrained: str, *, device=None, dtype=None, load_in_8bit: bool = False):
    """BLIP-2 (Salesforce/blip2-flan-t5-xxl in the paper) and its processor."""
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    device = pick_device(device)
    kwargs = {"dtype": dtype or default_dtype(device)}
    if load_in_8bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["device_map"] = {"": device.index or 0} if device.type == "cuda" else None
    model = Blip2ForConditionalGeneration.from_pretrained(pretrained, **kwargs)
    if not load_in_8bit:
        model = model.to(device)
    processor = Blip2Processor.from_pretrained(pretrained)
    return model.eval(), processor, device


# ----------------------------------------------------------------------------- aesthetic


class AestheticMLP(nn.Module):
    """The LAION aesthetic predictor v2 head, with its original layer layout so that
    sac+logos+ava1-l14-linearMSE.pth loads unchanged: Linear-Dropout-Linear-Dropout-
    Linear-Dropout-Linear-Linear, 768-1024-128-64-16-1, no activations."""

    def __init__(self, dims: tuple[int, ...] = (768, 1024, 128, 64, 16, 1)):
        super().__init__()
        d = dims
        self.layers = nn.Sequential(
            nn.Linear(d[0], d[1]), nn.Dropout(0.2),
            nn.Linear(d[1], d[2]), nn.Dropout(0.2),
            nn.Linear(d[2], d[3]), nn.Dropout(0.1),
            nn.Linear(d[3], d[4]),
            nn.Linear(d[4], d[5]),
        )

    def forward(self, embedding_BD: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding_BD)

    @classmethod
    def from_state_dict(cls, state: dict) -> AestheticMLP:
        keys = ("layers.0.weight", "layers.2.weight", "layers.4.weight", "layers.6.weight", "layers.7.weight")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"not an aesthetic-predictor state dict: missing {', '.join(missing)}")
        dims = (state[keys[0]].shape[1], *(state[k].shape[0] for k in keys))
        head = cls(dims)
        head.load_state_dict(state)
        return head


class AestheticPredictor(nn.Module):
    """CLIP image embedding (L2-normalised) -> MLP head -> score on the ~1..10 scale."""

    def __init__(self, clip_model, head: AestheticMLP):
        super().__init__()
        self.clip = clip_model
        self.head = head

    def forward(self, pixel_values_BCHW: torch.Tensor) -> torch.Tensor:
        features = self.clip.get_image_features(pixel_values=pixel_values_BCHW)
        features = getattr(features, "pooler_output", features)
        features = nn.functional.normalize(features.float(), dim=-1)
        return self.head(features).squeeze(-1)


def load_aesthetic(backbone: str, head_path: str, *, device=None):
    """LAION aesthetic predictor v2: CLIP ViT-L/14 backbone + MLP head weights file."""
    from transformers import CLIPImageProcessor, CLIPModel

    device = pick_device(device)
    state = torch.load(head_path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    head = AestheticMLP.from_state_dict(state)
    clip_model = CLIPModel.from_pretrained(backbone, dtype=torch.float32)
    if clip_model.config.projection_dim != head.layers[0].in_features:
        raise ValueError(
            f"aesthetic head {head_path} expects {head.layers[0].in_features}-d embeddings but "
            f"{backbone} gives {clip_model.config.projection_dim}-d"
        )
    model = AestheticPredictor(clip_model, head).to(device).eval()
    return model, CLIPImageProcessor.from_pretrained(backbone), device


# ----------------------------------------------------------------------------- HPS v2


def load_hps(model_name: str, checkpoint: str, *, device=None, model_config: str | None = None):
    """HPS v2: an open_clip model (ViT-H-14 for the real one) with the HPS checkpoint
    ({"state_dict": ...}, as HPS_v2_compressed.pt). `model_config` registers a model
    config JSON that open_clip does not ship (the tiny model's)."""
    import open_clip

    device = pick_device(device)
    if model_config:
        open_clip.add_model_config(model_config)
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model.load_state_dict(state)
    tokenizer = open_clip.get_tokenizer(model_name)
    return model.to(device).eval(), tokenizer, device


def read_manifest(directory: str | Path) -> dict:
    return json.loads((Path(directory) / "MANIFEST.json").read_text())
