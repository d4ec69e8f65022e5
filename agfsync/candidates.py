"""Stage 2, rule candidates_generate: N candidate images per prompt, one shard per job.

For each prompt the text is encoded once; candidate k gets Gaussian noise
n ~ N(0, sigma^2 I) added to the token-embedding sequence (and, for SDXL, to the pooled
embedding as candidates.pooled_noise says). All N candidates of a prompt, and
`prompts_per_batch` prompts, run in ONE UNet batch, with classifier-free guidance's
conditional and unconditional halves together (2 x P x N samples per UNet call).

Every random draw is seeded from (config seed, prompt id, candidate index): the initial
latent, the embedding noise, the sampler's own noise. A candidate's image therefore does
not depend on batch size, shard layout or machine, and a rerun reproduces it.

Paper (METHOD.md section 2) vs authors' code, as config switches:
  clean_first     authors' code keeps candidate 0 noise-free (default: all N noised, the paper)
  pooled_noise    'unit' reproduces the authors' sigma-1 noise on the SDXL pooled embedding
  shared_latents  reproduces the authors' bug of one set of N latents shared by all prompts
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import torch

from agfsync.ids import check_ids
from agfsync.seeds import derive_seed
from agfsync.shards import encode_npy, encode_png, image_member, latent_member, write_shard

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


def perturb(embeds_LD: torch.Tensor, sigma: float, seed: int, clean: bool) -> torch.Tensor:
    """embedding + n, n ~ N(0, sigma^2 I), computed in fp32."""
    if clean or sigma == 0:
        return embeds_LD.clone()
    noise = gaussian(embeds_LD.shape, seed).to(embeds_LD.device)
    return (embeds_LD.float() + sigma * noise).to(embeds_LD.dtype)


class CandidateGenerator:
    """Loads one model's pipeline once and draws candidates for batches of prompts."""

    def __init__(self, cfg: dict, model_name: str, device=None, unet=None):
        from agfsync.attention import configure_attention
        from agfsync.models import load_sd_pipeline, pick_device

        self.cfg = cfg
        self.model_name = model_name
        self.mcfg = cfg["models"][model_name]
        self.ccfg = cfg["candidates"]
        self.gcfg = self.mcfg["generation"]
        self.device = pick_device(device)
        self.pipe = load_sd_pipeline(self.mcfg["pretrained"], self.mcfg["family"], device=self.device,
                                     revision=self.mcfg.get("revision"), unet=unet)
        self.pipe.vae.enable_slicing()  # decode one image at a time: SDXL's VAE at 1024 px is memory-hungry
        self.scheduler = set_scheduler(self.pipe, self.gcfg["scheduler"])
        self.attention = configure_attention(self.pipe, self.ccfg["attention"], self.device)
        self.sdxl = self.mcfg["family"] == "sdxl"
        self.cfg_scale = float(self.gcfg["guidance_scale"])

    # -- text

    @torch.no_grad()
    def encode(self, prompts: list[str]):
        """(cond_PLD, uncond_PLD, pooled_PE | None, neg_pooled_PE | None): the text encoded once per prompt."""
        text = self.gcfg.get("negative_prompt", "")
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
        resolution = self.mcfg["resolution"]
        return {
            "prompt_id": record["id"], "candidate": k, "prompt": record["prompt"], "category": record.get("category"),
            "seed": seeds.latent, "noise_seed": seeds.noise, "sampler_seed": seeds.sampler,
            "model": self.model_name, "pretrained": self.mcfg["pretrained"], "scheduler": self.scheduler,
            "steps": self.gcfg["steps"], "guidance_scale": self.cfg_scale, "sigma": self.ccfg["sigma"],
            "clean": clean, "pooled_noise": self.ccfg["pooled_noise"] if self.sdxl else None,
            "width": resolution, "height": resolution, "dtype": str(self.pipe.unet.dtype).removeprefix("torch."),
            "cpu_threads": torch.get_num_threads(),  # CPU float sums depend on it (config cpu_threads)
            "image": image_member(record["id"], k),
            "latent": latent_member(record["id"], k) if self.ccfg["keep_latents"] else None,
        }

    @torch.no_grad()
    def generate(self, records: list[dict]) -> tuple[list[dict], np.ndarray, np.ndarray]:
        """Candidates for a batch of prompt records: (manifest rows, images (B,H,W,3) uint8,
        final latents (B,C,h,w) float16), B = len(records) x N, prompt-major."""
        n, sigma, seed = self.ccfg["num_per_prompt"], self.ccfg["sigma"], self.cfg["seed"]
        resolution = self.mcfg["resolution"]
        cond, uncond, pooled, neg_pooled = self.encode([r["prompt"] for r in records])
        latent_shape = (self.pipe.unet.config.in_channels, resolution // self.pipe.vae_scale_factor,
                        resolution // self.pipe.vae_scale_factor)
        rows, conds, pools, latents, generators = [], [], [], [], []
        for p, record in enumerate(records):
            for k in range(n):
                seeds = candidate_seeds(seed, record["id"], k, shared_latents=self.ccfg["shared_latents"])
                clean = self.ccfg["clean_first"] and k == 0
                conds.append(perturb(cond[p], sigma, seeds.noise, clean))
                if self.sdxl:
                    pooled_sigma = {"sigma": sigma, "none": 0.0, "unit": 1.0}[self.ccfg["pooled_noise"]]
                    pool_seed = derive_seed(seed, "pooled_noise", record["id"], k)
                    pools.append(perturb(pooled[p], pooled_sigma, pool_seed, clean))
                latents.append(gaussian(latent_shape, seeds.latent))
                generators.append(torch.Generator(self.device).manual_seed(seeds.sampler))
                rows.append(self.manifest_row(record, k, seeds, clean))
        dtype = self.pipe.unet.dtype
        kwargs = dict(
            prompt_embeds=torch.stack(conds),
            negative_prompt_embeds=uncond.repeat_interleave(n, dim=0),
            latents=torch.stack(latents).to(self.device, dtype),
            generator=generators, num_inference_steps=self.gcfg["steps"], guidance_scale=self.cfg_scale,
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


def generate_shard(cfg: dict, model_name: str, records: list[dict], out_path, *, device=None, progress: bool = True,
                   unet=None, row_extra: dict | None = None) -> dict:
    """Rule candidates_generate: all candidates of `records` into one shard file (atomic).
    Also the evaluation images (agfsync.evaluate): `unet` replaces the model's UNet and
    `row_extra` is added to every manifest row."""
    from tqdm import tqdm

    # Ids name the shard's members and seed every draw: checked (and unique) before any work,
    # whatever the caller read them from (agfsync.ids).
    check_ids(records, f"shard {out_path} input", (f"record {number}" for number in range(1, len(records) + 1)))
    started = time.perf_counter()
    rows, members = [], []
    per_batch = cfg["candidates"]["prompts_per_batch"]
    if records:
        generator = CandidateGenerator(cfg, model_name, device=device or cfg.get("device"), unet=unet)
        batches = [records[i : i + per_batch] for i in range(0, len(records), per_batch)]
        for batch in tqdm(batches, desc=f"{model_name} {out_path}", unit="batch", disable=not progress, mininterval=2):
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
