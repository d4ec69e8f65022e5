"""The world's text-to-image model: an SD 1.x-architecture diffusers pipeline trained on
(render, caption) pairs (torch).

1. The VAE (AutoencoderKL, 8x downsampling, 4 latent channels) learns to reconstruct
   renders; its scaling factor is set from the latents' spread, as SD's was. The UNet
   waits until its reconstructions pass the oracle (`vae_gate`).
2. A fixed set of training renders is encoded once; their descriptions are re-captioned
   at every visit (another template, other synonyms).
3. The UNet (UNet2DConditionModel, cross-attention) trains on epsilon prediction,
   conditioned on the world CLIP's text encoder (frozen, as SD's), with 10% empty
   captions for classifier-free guidance.
Captions never use a held-out color-shape pair (grammar.HELD_OUT_PAIRS).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from agfsync.world import captions, scenes
from agfsync.world.data import render_batch, rng_for, scene_batch, to_tensor
from agfsync.world.grammar import IMAGE_SIZE

log = logging.getLogger(__name__)

BETAS = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
TEXT_LENGTH = 32  # the world tokenizer's model_max_length: captions are at most 25 words
FOREGROUND_WEIGHT = 3.0  # VAE loss weight of object pixels over background ones
EDGE_WEIGHT = 2.0  # VAE loss weight of the image-gradient term (_edges)
VAE_CHANNELS = (8, 16, 32, 64)  # narrow at full resolution, where the compute is


def make_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=VAE_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=VAE_CHANNELS[0], sample_size=IMAGE_SIZE,
    )


def make_unet(text_dim: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(48, 96, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=16,
    )


def optimizer_step(opt, loss, *, lr_at=None, clip_params=None) -> None:
    """One update of every world training loop: backward, optional gradient clipping at 1,
    step, then the learning-rate schedule's step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    opt.step()
    if lr_at is not None:
        lr_at.step()


def _warmup(step: int, total: int, warm: int = 50) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warm:
        return (step + 1) / warm
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train_vae(schedule, seed: int):
    torch.manual_seed(rng_for(seed, "vae", "init").getrandbits(63))
    vae = make_vae()
    return _vae_steps(vae, seed, range(schedule.vae_steps), schedule.vae_batch, schedule.vae_lr,
                      lambda s: _warmup(s, schedule.vae_steps))


def continue_vae(vae, schedule, seed: int, round_: int):
    """`schedule.vae_extra_steps` more steps at the final learning rate (a failed gate)."""
    first = schedule.vae_steps + (round_ - 1) * schedule.vae_extra_steps
    return _vae_steps(vae.train(), seed, range(first, first + schedule.vae_extra_steps), schedule.vae_batch,
                      schedule.vae_lr, lambda s: 0.1)


def _edges(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 between the images' horizontal and vertical differences: sharp edges and corners
    (small squares otherwise come back as circles)."""
    dx = (recon[..., :, 1:] - recon[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])
    dy = (recon[..., 1:, :] - recon[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])
    return EDGE_WEIGHT * (dx.abs().mean() + dy.abs().mean())


def _vae_steps(vae, seed: int, steps: range, batch: int, lr: float, factor):
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    bar = tqdm(steps, desc="world vae", mininterval=5)
    for step in bar:
        *_, images, _, _ = render_batch(seed, "vae", step, batch)
        x = to_tensor(images)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.mode()).sample  # deterministic: colors are learned far sooner
        # Objects cover a few percent of the pixels: weight them up, or the background dominates.
        background = x[:, :, :1, :1]
        weight = 1.0 + FOREGROUND_WEIGHT * ((x - background).abs().amax(dim=1, keepdim=True) > 0.05)
        error = (recon - x).pow(2) + 0.5 * (recon - x).abs()
        loss = (weight * error).mean() / weight.mean() + 1e-6 * posterior.kl().mean() + _edges(recon, x)
        optimizer_step(opt, loss, lr_at=lr_at)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval()


def roundtrip(vae):
    """images -> the same images encoded and decoded by `vae` (judges' augmentation)."""
    from agfsync.world.data import to_images

    @torch.no_grad()
    def through(images):
        return to_images(vae.decode(vae.encode(to_tensor(images)).latent_dist.mean).sample)

    return through


@torch.no_grad()
def encode_training_set(vae, schedule, seed: int):
    """The UNet's training set, encoded once: (descriptions, latents (N, 4, 8, 8) unscaled)."""
    descriptions, latents = [], []
    chunk = 256
    for step in tqdm(range(math.ceil(schedule.unet_images / chunk)), desc="world latents", mininterval=5):
        pairs = scene_batch(seed, "unet-set", step, chunk, split="seen")
        from agfsync.world.scenes import render

        x = to_tensor([render(s) for _, s in pairs])
        latents.append(vae.encode(x).latent_dist.mean)
        descriptions += [d for d, _ in pairs]
    return descriptions[: schedule.unet_images], torch.cat(latents)[: schedule.unet_images]


def _tokens(tokenizer, texts):
    return tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


def text_encoder_from_clip(clip_model):
    """The text tower of the world CLIP as a CLIPTextModel (SD 1.x conditions on CLIP's
    text encoder, frozen)."""
    from transformers import CLIPTextModel

    text_encoder = CLIPTextModel(clip_model.config.text_config)
    text_encoder.load_state_dict(clip_model.text_model.state_dict())  # the same modules, one level up
    return text_encoder.float().eval().requires_grad_(False)


def train_unet(schedule, seed: int, tokenizer, descriptions, latents, scaling_factor: float, text_encoder):
    from diffusers import DDPMScheduler

    torch.manual_seed(rng_for(seed, "unet", "init").getrandbits(63))
    unet = make_unet(text_encoder.config.hidden_size)
    noise_scheduler = DDPMScheduler(**BETAS)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=schedule.unet_lr, weight_decay=1e-2)
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _warmup(s, schedule.unet_steps))
    alphas = noise_scheduler.alphas_cumprod
    empty = _tokens(tokenizer, [""])
    bar = tqdm(range(schedule.unet_steps), desc="world unet", mininterval=5)
    for step in bar:
        rng = rng_for(seed, "unet", step)
        gen = torch.Generator().manual_seed(rng.getrandbits(63))
        index = torch.randint(0, len(descriptions), (schedule.unet_batch,), generator=gen)
        noisy = schedule.unet_caption_noise
        texts = [captions.caption(scenes.mislabel(descriptions[i], rng) if noisy and rng.random() < noisy
                                  else descriptions[i], rng) for i in index.tolist()]
        ids = _tokens(tokenizer, texts)
        drop = torch.rand(len(texts), generator=gen) < 0.1
        ids[drop] = empty
        x0 = latents[index] * scaling_factor
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(texts),), generator=gen)
        xt = noise_scheduler.add_noise(x0, noise, t)
        with torch.no_grad():
            states = text_encoder(ids).last_hidden_state
        pred = unet(xt, t, states).sample
        snr = alphas[t] / (1 - alphas[t])
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR-5 weighting for epsilon prediction
        loss = (weight * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        optimizer_step(opt, loss, lr_at=lr_at, clip_params=params)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return unet.eval()


def pipeline(vae, unet, text_encoder, tokenizer, scaling_factor: float):
    """The StableDiffusionPipeline of the world (DDIM scheduler, no safety checker)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    vae.register_to_config(scaling_factor=float(scaling_factor))
    scheduler = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
