"""Training data of the world's models, drawn from seeded streams (torch).

Every batch is a function of (seed, stream name, step): a rerun draws the same images,
captions and questions, whatever ran before it.
"""

from __future__ import annotations


import numpy as np
import torch

from agfsync.world import captions, scenes
from agfsync.world.scenes import rng_for  # noqa: F401 (the training loops import it from here)
from agfsync.world.grammar import CATEGORIES


def to_tensor(images) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1], as the VAE sees them."""
    array = np.stack([np.asarray(im, dtype=np.uint8) for im in images]).astype(np.float32)
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1.0


def to_images(tensor: torch.Tensor):
    """Inverse of to_tensor (clamped)."""
    from PIL import Image

    array = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]


def scene_batch(seed: int, stream: str, step: int, size: int, split: str = "any", categories=CATEGORIES):
    """`size` (description, scene) pairs, categories in turn."""
    rng = rng_for(seed, stream, step)
    return [scenes.sample_scene(rng, categories[(step * size + i) % len(categories)], split) for i in range(size)]


def render_batch(seed: int, stream: str, step: int, size: int, split: str = "any", perturbed: float = 0.0,
                 roundtrip=None, roundtrip_p: float = 0.0):
    """(descriptions, scenes, images, qualities, captions): clean renders, or perturbed ones
    with probability `perturbed`; then, with probability `roundtrip_p`, an image is passed
    through `roundtrip` (a list of images -> the same images seen through the world's VAE:
    what a judge meets in generated images, soft corners and tinted backgrounds, with the
    render's truth as its label)."""
    pairs = scene_batch(seed, stream, step, size, split)
    rng = rng_for(seed, stream, "look", step)
    images, qualities, texts = [], [], []
    for description, scene in pairs:
        if rng.random() < perturbed:
            image, quality = scenes.perturb(scene, rng)
        else:
            image, quality = scenes.render(scene), 10.0
        images.append(image)
        qualities.append(quality)
        texts.append(captions.caption(description, rng))
    if roundtrip is not None and roundtrip_p > 0:
        pick = rng_for(seed, stream, "roundtrip", step)
        chosen = [i for i in range(len(images)) if pick.random() < roundtrip_p]
        if chosen:
            for i, image in zip(chosen, roundtrip([images[i] for i in chosen])):
                images[i] = image
    return [d for d, _ in pairs], [s for _, s in pairs], images, qualities, texts
