"""Stage 2, rule candidates_generate: N candidate images per prompt, one shard per job.

For each prompt the text is encoded once; candidate k gets Gaussian noise
n ~ N(0, sigma^2 I) added to the token-embedding sequence (and, for SDXL, to the pooled
embedding as candidates.pooled_noise says). All N candidates of a prompt, and
`prompts_per_batch` prompts, run in ONE UNet batch, with classifier-free guidance's
conditional and unconditional halves together (2 x P x N samples per UNet call).

Every random draw is seeded from (config seed, prompt id, candidate index): the initial
latent, the embedding noise, the sampler's own noise. A candidate's image therefore does
not depend on batch size, shard layout or machine, and a rerun reproduces it.

Paper (docs/method.md, Candidates) vs authors' code, as config switches:
  clean_first     authors' code keeps candidate 0 noise-free (default: all N noised, the paper)
  pooled_noise    'unit' reproduces the authors' sigma-1 noise on the SDXL pooled embedding
                  (of every candidate: clean_first keeps candidate 0's tokens clean, not its pooled)
  shared_latents  reproduces the authors' bug of one set of N latents shared by all prompts

Entry point: `run(settings, inputs, outputs, model=, shard=)`, called by the rule's script and
by `agfsync candidates`. The evaluation images (agfsync.stages.evaluate) come from the same
generator, built with explicit arguments: one clean image per prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch

from agfsync.core.ids import check_ids, read_records
from agfsync.core.seeds import derive_seed
from agfsync.core.shards import encode_npy, encode_png, image_member, latent_member, shard_records, write_shard

if TYPE_CHECKING:
    from agfsync.core.sections import CandidatesSettings, ModelSettings, Settings

log = logging.getLogger(__name__)

SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
}


def set_scheduler(pipe, name: str) -> str:
    """Replace the pipeline's scheduler (same betas, from its config); 'default' keeps it."""
    if name == "default":
        return type(pipe.scheduler).__name__
    import diffusers

    class_name, overrides = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **overrides)
    return class_name


@dataclasses.dataclass(frozen=True)
class CandidateSeeds:
    latent: int
    noise: int
    sampler: int


def candidate_seeds(seed: int, prompt_id: str, candidate: int, *, shared_latents: bool = False) -> CandidateSeeds:
    latent_owner = "shared" if shared_latents else prompt_id
    return CandidateSeeds(
        latent=derive_seed(seed, "latent", latent_owner, candidate),
        noise=derive_seed(seed, "text_noise", prompt_id, candidate),
        sampler=derive_seed(seed, "sampler", prompt_id, candidate),
    )


def gaussian(shape, seed: int) -> torch.Tensor:
    """N(0, 1) draws from a CPU generator: the same values on every device."""
    return torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


POOLED_NOISE = ("sigma", "none", "unit")  # candidates.pooled_noise: SDXL's pooled embedding gets sigma, 0 or 1


def perturb(embeds_LD: torch.Tensor, sigma: float, seed: int, clean: bool) -> torch.Tensor:
    """embedding + n, n ~ N(0, sigma^2 I), computed in fp32."""
    if clean or sigma == 0:
        return embeds_LD.clone()
    noise = gaussian(embeds_LD.shape, seed).to(embeds_LD.device)
    return (embeds_LD.float() + sigma * noise).to(embeds_LD.dtype)


class CandidateGenerator:
    """Loads one model's pipeline once and draws candidates for batches of prompts.

    Every draw setting is an explicit argument (`from_settings` takes them from the
    candidates section); the evaluation images pass their own (one clean image per prompt)."""

    def __init__(self, model_name: str, model: ModelSettings, *, seed: int, num_per_prompt: int, sigma: float,
                 clean_first: bool, pooled_noise: str, shared_latents: bool, keep_latents: bool, attention: str,
                 device=None, unet=None):
        from agfsync.models.attention import configure_attention
        from agfsync.models.loaders import load_sd_pipeline, pick_device

        if pooled_noise not in POOLED_NOISE:
            raise ValueError(f"unknown pooled_noise {pooled_noise!r} (expected one of {', '.join(POOLED_NOISE)})")
        self.model_name, self.model = model_name, model
        self.seed, self.num_per_prompt, self.sigma = seed, num_per_prompt, sigma
        self.clean_first, self.pooled_noise = clean_first, pooled_noise
        self.shared_latents, self.keep_latents = shared_latents, keep_latents
        self.generation = model.generation
        self.device = pick_device(device)
        self.pipe = load_sd_pipeline(model.pretrained, model.family, device=self.device, revision=model.revision,
                                     unet=unet)
        self.pipe.vae.enable_slicing()  # decode one image at a time: SDXL's VAE at 1024 px is memory-hungry
        self.scheduler = set_scheduler(self.pipe, self.generation.scheduler)
        self.attention = configure_attention(self.pipe, attention, self.device)
        self.sdxl = model.family == "sdxl"
        self.cfg_scale = float(self.generation.guidance_scale)

    @classmethod
    def from_settings(cls, model_name: str, model: ModelSettings, candidates: CandidatesSettings, *, seed: int,
                      device=None, unet=None) -> CandidateGenerator:
        """The generator of stage 2: N noised candidates per prompt, as the candidates section says."""
        return cls(model_name, model, seed=seed, num_per_prompt=candidates.num_per_prompt, sigma=candidates.sigma,
                   clean_first=candidates.clean_first, pooled_noise=candidates.pooled_noise,
                   shared_latents=candidates.shared_latents, keep_latents=candidates.keep_latents,
                   attention=candidates.attention, device=device, unet=unet)

    # -- text

    @torch.no_grad()
    def encode(self, prompts: list[str]):
        """(cond_PLD, uncond_PLD, pooled_PE | None, neg_pooled_PE | None): the text encoded once per prompt."""
        text = self.generation.negative_prompt
        # None, not [""]: SDXL then uses zeros for the unconditional embedding, as its pipeline does
        # by default (force_zeros_for_empty_prompt); SD 1.x encodes "" either way.
        negative = [text] * len(prompts) if text else None
        if self.sdxl:
            cond, uncond, pooled, neg_pooled = self.pipe.encode_prompt(
                prompt=prompts, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=True,
                negative_prompt=negative,
            )
            return cond, uncond, pooled, neg_pooled
        cond, uncond = self.pipe.encode_prompt(prompts, self.device, 1, True, negative_prompt=negative)
        return cond, uncond, None, None

    # -- sampling

    def manifest_row(self, record: dict, k: int, seeds: CandidateSeeds, clean: bool) -> dict:
        resolution = self.model.resolution
        return {
            "prompt_id": record["id"], "candidate": k, "prompt": record["prompt"], "category": record.get("category"),
            "seed": seeds.latent, "noise_seed": seeds.noise, "sampler_seed": seeds.sampler,
            "model": self.model_name, "pretrained": self.model.pretrained, "scheduler": self.scheduler,
            "steps": self.generation.steps, "guidance_scale": self.cfg_scale, "sigma": self.sigma,
            "clean": clean, "pooled_noise": self.pooled_noise if self.sdxl else None,
            "width": resolution, "height": resolution, "dtype": str(self.pipe.unet.dtype).removeprefix("torch."),
            "cpu_threads": torch.get_num_threads(),  # CPU float sums depend on it (config cpu_threads)
            "image": image_member(record["id"], k),
            "latent": latent_member(record["id"], k) if self.keep_latents else None,
        }

    @torch.no_grad()
    def generate(self, records: list[dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """Candidates for a batch of prompt records: (manifest rows, images (B,H,W,3) uint8,
        final latents (B,C,h,w) float16), B = len(records) x N, prompt-major."""
        n, sigma, seed = self.num_per_prompt, self.sigma, self.seed
        resolution = self.model.resolution
        cond, uncond, pooled, neg_pooled = self.encode([r["prompt"] for r in records])
        latent_shape = (self.pipe.unet.config.in_channels, resolution // self.pipe.vae_scale_factor,
                        resolution // self.pipe.vae_scale_factor)
        rows, conds, pools, latents, generators = [], [], [], [], []
        for p, record in enumerate(records):
            for k in range(n):
                seeds = candidate_seeds(seed, record["id"], k, shared_latents=self.shared_latents)
                clean = self.clean_first and k == 0
                conds.append(perturb(cond[p], sigma, seeds.noise, clean))
                if self.sdxl:
                    pooled_sigma = {"sigma": sigma, "none": 0.0, "unit": 1.0}[self.pooled_noise]
                    pool_seed = derive_seed(seed, "pooled_noise", record["id"], k)
                    # the authors' script noises every pooled embedding, candidate 0's too
                    pools.append(perturb(pooled[p], pooled_sigma, pool_seed, clean and self.pooled_noise != "unit"))
                latents.append(gaussian(latent_shape, seeds.latent))
                generators.append(torch.Generator(self.device).manual_seed(seeds.sampler))
                rows.append(self.manifest_row(record, k, seeds, clean))
        dtype = self.pipe.unet.dtype
        kwargs = dict(
            prompt_embeds=torch.stack(conds),
            negative_prompt_embeds=uncond.repeat_interleave(n, dim=0),
            latents=torch.stack(latents).to(self.device, dtype),
            generator=generators, num_inference_steps=self.generation.steps, guidance_scale=self.cfg_scale,
            height=resolution, width=resolution, output_type="latent",
        )
        if self.sdxl:
            kwargs.update(pooled_prompt_embeds=torch.stack(pools),
                          negative_pooled_prompt_embeds=neg_pooled.repeat_interleave(n, dim=0))
        final = self.pipe(**kwargs).images
        images = self.decode(final)
        return rows, images, final.float().cpu().numpy().astype(np.float16)

    @torch.no_grad()
    def decode(self, latents_BCHW: torch.Tensor) -> np.ndarray:
        vae = self.pipe.vae
        z = latents_BCHW.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        pixels = vae.decode(z).sample
        array = self.pipe.image_processor.postprocess(pixels.float(), output_type="np")
        return (array * 255).round().astype(np.uint8)


def write_images(new_generator: Callable[[], CandidateGenerator], records: list[dict], out_path, *,
                 prompts_per_batch: int, label: str, progress: bool = True, row_extra: dict | None = None) -> dict:
    """Every image of `records` into one shard file (atomic), `prompts_per_batch` prompts per
    UNet call. The generator (a pipeline load) is made only when there is a record to draw;
    `row_extra` is added to every manifest row. Shared by stage 2 and the evaluation images."""
    from tqdm import tqdm

    # Ids name the shard's members and seed every draw: checked (and unique) before any work,
    # whatever the caller read them from (agfsync.core.ids).
    check_ids(records, f"shard {out_path} input", (f"record {number}" for number in range(1, len(records) + 1)))
    started = time.perf_counter()
    rows, members = [], []
    if records:
        generator = new_generator()
        batches = [records[i : i + prompts_per_batch] for i in range(0, len(records), prompts_per_batch)]
        for batch in tqdm(batches, desc=f"{label} {out_path}", unit="batch", disable=not progress, mininterval=2):
            batch_rows, images, latents = generator.generate(batch)
            batch_rows = [{**row, **(row_extra or {})} for row in batch_rows]
            for row, image, latent in zip(batch_rows, images, latents):
                members.append((row["image"], encode_png(image)))
                if row["latent"]:
                    members.append((row["latent"], encode_npy(latent)))
            rows += batch_rows
    write_shard(out_path, rows, members)
    seconds = time.perf_counter() - started
    summary = {"shard": str(out_path), "prompts": len(records), "images": len(rows), "seconds": round(seconds, 3),
               "images_per_s": round(len(rows) / seconds, 3) if rows else 0.0}
    log.info("candidates: %s: %d prompts, %d images in %.1f s (%.2f images/s)", out_path, summary["prompts"],
             summary["images"], seconds, summary["images_per_s"])
    return summary


def generate_shard(settings: Settings, model_name: str, records: list[dict], out_path, *, device=None,
                   progress: bool = True) -> dict:
    """All candidates of `records` with model `model_name` into one shard file (atomic).
    Reads settings.models[model_name], settings.candidates, settings.seed and settings.device."""
    candidates = settings.candidates
    model = settings.models[model_name]
    return write_images(
        lambda: CandidateGenerator.from_settings(model_name, model, candidates, seed=settings.seed,
                                                 device=device or settings.device),
        records, out_path, prompts_per_batch=candidates.prompts_per_batch, label=model_name, progress=progress)


def run(settings: Settings, inputs: Mapping, outputs: Mapping, *, model: str, shard, progress: bool = True) -> dict:
    """Rule candidates_generate (`agfsync candidates`): the candidates of shard `shard` (index,
    or its wildcard "00002") of the prompts in inputs["qa"], into outputs["shard"]."""
    qa = inputs["qa"]
    records = shard_records(read_records(qa, required=("id", "prompt")), int(shard), settings.candidates.shard_size,
                            source=qa)
    return generate_shard(settings, model, records, outputs["shard"], progress=progress)
