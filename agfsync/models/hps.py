"""HPS v2 (Wu et al. 2023): scorer and aggregation, following the official protocol
(github tgxs002/HPSv2; docs/method.md, Evaluation). Used by the evaluation stage.

- model: open_clip ViT-H-14 with the HPS checkpoint (HPS_v2_compressed.pt or
  HPS_v2.1_compressed.pt: their scales differ, so the version is recorded with results);
- preprocessing: RGB; the longest side resized to the model's input size (224) with
  bicubic interpolation, the short side padded symmetrically with 0 to a square (no
  centre crop); OpenAI CLIP mean/std;
- score = 100 * cos(image embedding, text embedding);
- benchmark aggregation: per style (anime, concept-art, paintings, photo; 800 prompts
  each), the images are taken in benchmark order in chunks of 80; the style score is the
  mean of the chunk means (std over chunks reported too); the average is over styles.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from agfsync.core.benchmarks import CHUNK, STYLES  # noqa: F401 (re-exported: the protocol's constants)

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def resize_max_pad(image: Image.Image, size: int, fill: int = 0) -> Image.Image:
    """Longest side to `size` (bicubic), then pad to size x size, centred (HPS v2's ResizeMaxSize)."""
    image = image.convert("RGB")
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = round(width * scale), round(height * scale)
    resized = image.resize((new_w, new_h), Image.BICUBIC)
    canvas = Image.new("RGB", (size, size), (fill, fill, fill))
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def preprocess(images, size: int) -> np.ndarray:
    """(B, 3, size, size) float32, normalised with the OpenAI mean and std."""
    arrays = [np.asarray(resize_max_pad(image, size), dtype=np.float32) / 255.0 for image in images]
    batch = np.stack(arrays).transpose(0, 3, 1, 2)
    mean = np.asarray(OPENAI_MEAN, dtype=np.float32)[None, :, None, None]
    std = np.asarray(OPENAI_STD, dtype=np.float32)[None, :, None, None]
    return (batch - mean) / std


class HPSScorer:
    def __init__(self, model, tokenizer, device, version: str):
        self.model, self.tokenizer, self.device, self.version = model, tokenizer, device, version
        size = model.visual.image_size
        self.size = size[0] if isinstance(size, (tuple, list)) else int(size)

    def score(self, images, prompt: str) -> np.ndarray:
        import torch

        with torch.no_grad():
            pixels = torch.from_numpy(preprocess(images, self.size)).to(self.device)
            image = torch.nn.functional.normalize(self.model.encode_image(pixels).float(), dim=-1)
            text = torch.nn.functional.normalize(self.model.encode_text(self.tokenizer([prompt]).to(self.device)).float(),
                                                 dim=-1)
        return (100.0 * (image @ text.T)[:, 0]).cpu().numpy().astype(np.float64)


def aggregate(scores_by_style: dict[str, list[float]], chunk: int = CHUNK) -> dict:
    """Per style: mean and std of the means of consecutive `chunk`-image chunks (a last,
    shorter chunk counts as one chunk); average over styles."""
    out = {}
    for style, scores in scores_by_style.items():
        values = np.asarray(scores, dtype=np.float64)
        if values.size == 0:
            raise ValueError(f"HPS v2: style {style!r} has no scores")
        means = [values[i : i + chunk].mean() for i in range(0, values.size, chunk)]
        out[style] = {"mean": float(np.mean(means)), "std": float(np.std(means)), "num_chunks": len(means),
                      "num_images": int(values.size)}
    return {"styles": out, "average": float(np.mean([v["mean"] for v in out.values()]))}
