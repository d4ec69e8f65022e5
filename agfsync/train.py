"""Stage 5, rule train_dpo: Diffusion-DPO fine-tuning of the UNet (agfsync.dpo's loss).

Run under torchrun, one process per GPU (gloo processes on a CPU):

    torchrun --standalone --nproc-per-node G -m agfsync.train --stage-config cfg.json \\
        --model sdxl --cache results/sdxl/train_cache --out results/sdxl/agfsync \\
        --checkpoints results/sdxl/train_checkpoints

(agfsync.launch.run_training builds that command; the workflow rule calls it.)

- policy: the full UNet in fp32 (master weights), bf16 autocast on GPU; or LoRA adapters
  (train.lora_rank) on a frozen UNet.
- reference: a frozen copy in bf16 on the GPU (never CPU-offloaded); with LoRA, the same
  UNet with its adapters disabled.
- per micro-batch: ONE noise draw and ONE timestep shared by winner and loser (separate
  noise in the authors' variant), both through the policy in one batch, both through the
  reference, loss from agfsync.dpo. Noise and timesteps are seeded by (seed, step, micro,
  rank), and the pairs by agfsync.train_data.batch_indices: a resumed run draws exactly
  what an uninterrupted one would.
- DeepSpeed ZeRO 0-3, gradient accumulation so that micro_batch x accumulation x world
  size = the paper's global batch, clipping, AdamW8bit or AdamW, warmup + cosine/constant.
- checkpoints every train.checkpoint_every steps into --checkpoints (not a Snakemake
  output, so a failed job keeps them); EVERY rank calls save_checkpoint (rank-0-only
  saving is the known DeepSpeed hang). After all ranks saved, rank 0 writes the tag's
  manifest (file sizes and sha256, the step, the last metrics and the training time so
  far; agfsync.checkpoints), then `latest`. A rerun resumes from the newest checkpoint whose
  manifest matches its files, loaded without unpickling arbitrary objects; a truncated or
  interrupted one is skipped with a warning naming it.
- a non-finite loss or prediction (checked on every micro-batch before backward, agreed by
  all ranks) or gradient norm stops the run with NonFiniteError: no model and no checkpoint
  of that step is written. With train.max_nonfinite_steps N > 0, up to N steps whose loss is
  non-finite are skipped instead (their micro-batches contribute zero gradient and the step
  runs at lr 0, so the weights do not move); the next one stops the run.
- outputs: unet/ in diffusers format (safetensors, fp32), metrics.jsonl (one line per
  step, appended with agfsync.io.append_jsonl), summary.json (steps, final metrics, wall
  time summed over resumed segments, peak memory, config hash).

Shapes: B pairs per micro-batch, C/H/W latent channels/height/width, L tokens, D width.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import socket
import sys
import time
from pathlib import Path

import torch

from agfsync import checkpoints as ckpt
from agfsync.checkpoints import CheckpointError
from agfsync.dpo import LOSSES, METRICS, prediction_target
from agfsync.io import DataError, append_jsonl, read_jsonl, write_json, write_jsonl
from agfsync.seeds import derive_seed

log = logging.getLogger("agfsync.train")


class TrainConfigError(ValueError):
    """A training setting that cannot work (batch arithmetic, GPU count, unsupported combination)."""


class NonFiniteError(RuntimeError):
    """A non-finite loss, prediction or gradient norm: the run stops and saves no model."""


def config_hash(cfg: dict, model_name: str) -> str:
    relevant = {"seed": cfg["seed"], "model": cfg["models"][model_name], "train": cfg["train"]}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


class DPOTrainer:
    def __init__(self, cfg: dict, model_name: str, cache_dir, checkpoints, out_dir):
        from diffusers import DDPMScheduler, UNet2DConditionModel

        from agfsync.attention import configure_attention
        from agfsync.engine import build_engine, init_distributed
        from agfsync.kernels.runtime import use_triton
        from agfsync.train_data import PairCache

        self.cfg, self.model_name = cfg, model_name
        if cfg.get("cpu_threads"):  # whatever OMP_NUM_THREADS says: CPU float sums, and so the weights, depend on it
            torch.set_num_threads(int(cfg["cpu_threads"]))
        self.tcfg, self.mcfg = cfg["train"], cfg["models"][model_name]
        self.hp = self.mcfg["train"]
        self.checkpoints, self.out_dir = Path(checkpoints), Path(out_dir)
        cuda = cfg.get("device") != "cpu" and torch.cuda.is_available()
        if cfg.get("device") == "cuda" and not torch.cuda.is_available():
            raise TrainConfigError("device is 'cuda' but no CUDA device is visible")
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if cuda and torch.cuda.device_count() < local_world:
            raise TrainConfigError(f"train.gpus asks for {local_world} GPUs per node but this node has "
                               f"{torch.cuda.device_count()} CUDA device(s)")
        backend = self.tcfg.get("launch", {}).get("backend", "auto")
        if backend == "auto":
            backend = "nccl" if cuda else "gloo"
        elif backend == "nccl" and not cuda:
            raise TrainConfigError("train.launch.backend is 'nccl' but this run has no CUDA device (use gloo or auto)")
        self.rank, self.world, self.local_rank = init_distributed(backend)
        node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # SLURM's node name where there is one
        log.info("train: rank %d of %d on %s, backend %s", self.rank, self.world, node, backend)
        self.device = torch.device(f"cuda:{self.local_rank}" if cuda else "cpu")
        if cuda:
            torch.cuda.set_device(self.device)
        precision = self.tcfg["precision"]
        self.autocast = (precision == "bf16") or (precision == "auto" and cuda)

        micro, global_batch = self.hp["micro_batch"], self.hp["global_batch"]
        if global_batch % (micro * self.world):
            raise TrainConfigError(f"models.{model_name}.train.global_batch ({global_batch}) must be a multiple of "
                             f"micro_batch ({micro}) x processes ({self.world})")
        self.grad_accum = global_batch // (micro * self.world)
        self.cache = PairCache(cache_dir)
        self.cache_dir = Path(cache_dir)
        self.sdxl = self.cache.index["family"] == "sdxl"

        pretrained = self.mcfg["pretrained"]
        unet = UNet2DConditionModel.from_pretrained(pretrained, subfolder="unet", revision=self.mcfg.get("revision"),
                                                    dtype=torch.float32)
        self.noise_scheduler = DDPMScheduler.from_pretrained(pretrained, subfolder="scheduler")
        self.prediction_type = self.mcfg.get("prediction_type", "epsilon")
        self.lora = self.tcfg.get("lora_rank")
        if self.lora:
            if self.tcfg["zero_stage"] == 3:
                raise TrainConfigError("train.lora_rank with train.zero_stage 3 is not supported; use stage 0-2")
            from peft import LoraConfig

            unet.requires_grad_(False)
            # peft draws the adapters' initial weights from torch's global generator: seed it from the
            # config (and restore it after), or every run starts from different adapters
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(cfg["seed"], "lora_init", model_name))
                unet.add_adapter(LoraConfig(r=self.lora, lora_alpha=self.lora, init_lora_weights="gaussian",
                                            target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
            self.reference = None
        else:
            ref_dtype = torch.bfloat16 if self.autocast else torch.float32  # frozen: bf16 halves its memory
            self.reference = copy.deepcopy(unet).to(self.device, ref_dtype).requires_grad_(False).eval()
        unet.to(self.device).train()
        if self.tcfg["gradient_checkpointing"]:
            unet.enable_gradient_checkpointing()
        configure_attention(unet, self.tcfg["attention"], self.device)
        if self.reference is not None:
            configure_attention(self.reference, self.tcfg["attention"], self.device)
        # Triton kernels (agfsync/kernels): fused GroupNorm+SiLU in both UNets, fused DPO loss.
        self.kernels = use_triton(self.tcfg.get("kernels", "auto"), self.device)
        if self.kernels:
            from agfsync.kernels.modules import swap_group_norm_silu
            from agfsync.kernels.self_check import check_kernels

            check_kernels(self.device)  # the compiled kernels on this GPU, before they touch the model
            for model in (unet, self.reference):
                if model is not None:
                    swap_group_norm_silu(model)
            if self.tcfg["loss"] != "dpo":
                log.info("kernels: the fused loss implements train.loss 'dpo'; %r runs in torch", self.tcfg["loss"])
        self.fused_loss = None  # (pred_2B, ref_2B, target_w, target_l, beta) -> (loss, metrics)
        if self.kernels and self.tcfg["loss"] == "dpo":
            from agfsync.kernels.dpo_loss import dpo_loss

            self.fused_loss = dpo_loss
        self.engine = build_engine(unet, self.tcfg, self.hp["lr"], micro_batch=micro, grad_accum=self.grad_accum,
                                   warmup_steps=self.hp["warmup_steps"], total_steps=self.hp["steps"])
        self.loss_fn = LOSSES[self.tcfg["loss"]]

    # ------------------------------------------------------------------ one micro-batch

    def _forward(self, module, latents_BCHW, timesteps_B, batch) -> torch.Tensor:
        repeat = latents_BCHW.shape[0] // batch["prompt_embeds"].shape[0]
        kwargs = {"encoder_hidden_states": batch["prompt_embeds"].repeat(repeat, 1, 1)}
        if self.sdxl:
            kwargs["added_cond_kwargs"] = {"text_embeds": batch["pooled"].repeat(repeat, 1),
                                           "time_ids": batch["time_ids"].repeat(repeat, 1)}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return module(latents_BCHW, timesteps_B, **kwargs).sample

    def micro_step(self, step: int, micro: int) -> dict:
        from agfsync.train_data import batch_indices

        seed = self.cfg["seed"]
        indices = batch_indices(seed, len(self.cache), self.hp["global_batch"], step, micro, self.rank, self.world,
                                self.hp["micro_batch"])
        batch = {k: v.to(self.device) for k, v in self.cache.get(indices).items()}
        x_w, x_l = batch["latents_w"], batch["latents_l"]
        generator = torch.Generator("cpu").manual_seed(derive_seed(seed, "dpo", step, micro, self.rank))
        b = x_w.shape[0]
        noise_w = torch.randn(x_w.shape, generator=generator)
        # One noise draw shared by winner and loser (Wallace et al.); the authors' variant draws two.
        noise_l = torch.randn(x_l.shape, generator=generator) if self.tcfg["loss"] == "authors" else noise_w
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
        noise_w, noise_l, timesteps = noise_w.to(self.device), noise_l.to(self.device), timesteps.to(self.device)
        noisy = torch.cat([self.noise_scheduler.add_noise(x_w, noise_w, timesteps),
                           self.noise_scheduler.add_noise(x_l, noise_l, timesteps)])
        t2 = torch.cat([timesteps, timesteps])
        pred = self._forward(self.engine, noisy, t2, batch)
        with torch.no_grad():
            if self.reference is not None:
                ref = self._forward(self.reference, noisy.to(next(self.reference.parameters()).dtype), t2, batch)
            else:
                self.engine.module.disable_adapters()
                ref = self._forward(self.engine.module, noisy, t2, batch)
                self.engine.module.enable_adapters()
        target_w = prediction_target(self.noise_scheduler, x_w, noise_w, timesteps, self.prediction_type)
        target_l = prediction_target(self.noise_scheduler, x_l, noise_l, timesteps, self.prediction_type)
        if self.fused_loss is not None:
            loss, metrics = self.fused_loss(pred, ref, target_w, target_l, self.hp["beta_dpo"])
        else:
            loss, metrics = self.loss_fn(pred[:b], pred[b:], ref[:b].float(), ref[b:].float(), target_w, target_l,
                                         self.hp["beta_dpo"])
        loss = self._check_finite(step, micro, loss, pred)
        self.engine.backward(loss)
        if self.skip_step and micro == self.grad_accum - 1:  # the optimizer step of a skipped step moves nothing
            for group in self.engine.client_optimizer.param_groups:
                group["lr"] = 0.0  # the lr scheduler, stepped right after, sets the next step's rate again
        self.engine.step()
        return metrics

    def _check_finite(self, step: int, micro: int, loss: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate. All ranks agree (one all-reduce) whether any rank's loss
        or prediction is non-finite: a non-finite prediction stops the run; a non-finite loss
        stops it too, unless train.max_nonfinite_steps allows skipping this step, in which case
        a zero surrogate (exact zero gradients for every parameter) replaces the loss."""
        import torch.distributed as dist

        flags = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0,
                              0.0 if torch.isfinite(pred.detach()).all() else 1.0], device=loss.device)
        if dist.is_initialized() and self.world > 1:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        bad_loss, bad_pred = bool(flags[0]), bool(flags[1])
        if bad_pred:
            self._stop(step, f"the UNet's prediction is non-finite (micro-batch {micro}; the weights or inputs have "
                             "overflowed: a too large lr?)")
        if not bad_loss:
            return loss
        if not self.skip_step:
            allowed = self.tcfg.get("max_nonfinite_steps", 0)
            if self.nonfinite_steps >= allowed:
                value = float(loss.detach().float().mean())
                self._stop(step, f"loss is {value if not math.isfinite(value) else 'non-finite on another rank'} "
                                 f"(micro-batch {micro}; "
                                 f"models.{self.model_name}.train.beta_dpo is {self.hp['beta_dpo']}, lr "
                                 f"{self.hp['lr']})")
            self.skip_step = True
        return (pred.float() * 0.0).sum()

    def _stop(self, step: int, why: str) -> None:
        allowed = self.tcfg.get("max_nonfinite_steps", 0)
        kept = (f"checkpoints up to step {self.last_checkpoint} kept in {self.checkpoints}" if self.last_checkpoint
                else "no checkpoint kept")
        raise NonFiniteError(f"step {step + 1}: {why}; {self.nonfinite_steps} non-finite step(s) skipped before, "
                             f"train.max_nonfinite_steps is {allowed}: stopping; no model saved; {kept}")

    # ------------------------------------------------------------------ loop

    def _barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized() and self.world > 1:
            dist.barrier()

    def _check_weights(self, step: int) -> None:
        """Stop (NonFiniteError naming the first bad parameter) when an update left a NaN or an
        infinity in the weights: the loss and gradient checks run before the update, so an
        overflow in the optimizer itself (lr 1e39, no clipping) would otherwise be saved.
        Run before every checkpoint and before the final model; every rank checks its own
        share (ZeRO-3: its partition) and all agree."""
        import torch.distributed as dist

        bad = ""
        for name, param in self.engine.module.named_parameters():
            data = getattr(param, "ds_tensor", param)  # ZeRO-3 keeps this rank's partition there
            if param.requires_grad and data.numel() and not bool(torch.isfinite(data).all()):
                bad = name
                break
        flag = torch.tensor([1.0 if bad else 0.0])
        if dist.is_initialized() and self.world > 1:
            flag = _all_reduce(flag, self.device)
        if flag.item() > 0:
            where = f"parameter {bad}" if bad else "a parameter of another rank"
            self._stop(step - 1, f"the update left a non-finite value in {where} (models.{self.model_name}.train.lr "
                                 f"{self.hp['lr']:g} too high, or train.grad_clip off?); nothing of this step is saved")

    def _save_checkpoint(self, step: int, state: dict) -> None:
        self._check_weights(step)
        tag = ckpt.tag_name(step)
        if self.rank == 0:  # a leftover of an interrupted run (and its manifest) must not mix with this save
            shutil.rmtree(self.checkpoints / tag, ignore_errors=True)
        self._barrier()
        # Every rank must take part: rank-0-only saving hangs DeepSpeed (METHOD.md section 3).
        self.engine.save_checkpoint(str(self.checkpoints), tag=tag, client_state={"step": step}, save_latest=False)
        self._barrier()
        if self.rank == 0:  # complete only now: manifest, then `latest`
            ckpt.write_manifest(self.checkpoints, step, state)
            # a full SDXL checkpoint is tens of GB: keep the newest few (never the one just verified)
            ckpt.prune(self.checkpoints, self.tcfg["keep_checkpoints"], tag)
        self.last_checkpoint = step

    def identity(self) -> dict:
        """What a checkpoint must have been trained on to be resumed: the training config
        (less the checkpointing settings) and the exact pair cache."""
        from agfsync.io import sha256_file

        # the world size counts, below; raising max_nonfinite_steps after a stop resumes the same run
        skip = ("checkpoint_every", "keep_checkpoints", "max_nonfinite_steps", "launch", "gpus", "nodes")
        tcfg = {k: v for k, v in self.tcfg.items() if k not in skip}
        relevant = {"seed": self.cfg["seed"], "model": self.mcfg, "train": tcfg, "processes": self.world}
        return {"config": hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16],
                "cache": sha256_file(self.cache_dir / "index.json")[:16]}

    def _claim_checkpoints(self) -> None:
        """Checkpoints of another config or another pair cache (a changed lr, regenerated
        pairs) are never resumed: they are deleted, and this run starts from step 0."""
        import torch.distributed as dist

        marker = self.checkpoints / "identity.json"
        mine = self.identity()
        if self.rank == 0:
            found = json.loads(marker.read_text()) if marker.exists() else None
            if found != mine and ckpt.tag_dirs(self.checkpoints):
                log.warning("train: checkpoints in %s were trained on %s, this run is %s: starting from step 0",
                            self.checkpoints, found, mine)
                shutil.rmtree(self.checkpoints)
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            write_json(marker, mine)
        if dist.is_initialized() and self.world > 1:
            dist.barrier()

    def _resume(self) -> dict:
        """The manifest of the checkpoint resumed from ({} when starting at step 0). Rank 0
        picks the newest intact checkpoint (moving the newer, broken ones it skipped to
        <checkpoints>/rejected/, never deleting them) and broadcasts its choice, so every rank
        loads the same tag."""
        import torch.distributed as dist

        choice = [None]
        if self.rank == 0:
            ckpt.adopt_legacy(self.checkpoints)  # written by an agfsync without manifests: checked once, adopted
            found = ckpt.choose(self.checkpoints)
            newest = found[0] if found else None
            for tag_dir in ckpt.tag_dirs(self.checkpoints):
                if newest is None or ckpt.tag_step(tag_dir.name) > ckpt.tag_step(newest):
                    ckpt.set_aside(self.checkpoints, tag_dir)  # skipped above, with a warning naming it; kept
            if found is None and (self.checkpoints / "latest").exists():
                log.warning("train: no complete checkpoint in %s: starting from step 0", self.checkpoints)
                (self.checkpoints / "latest").unlink()
            choice = [found]
        if dist.is_initialized() and self.world > 1:
            dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return {}
        tag, manifest = choice[0]
        _, client_state = self.engine.load_checkpoint(str(self.checkpoints), tag=tag)
        if client_state is None or int(client_state.get("step", -1)) != int(manifest["step"]):
            raise CheckpointError(f"{self.checkpoints / tag}: DeepSpeed loaded step "
                                  f"{None if client_state is None else client_state.get('step')}, its manifest says "
                                  f"{manifest['step']}")
        log.info("train: resumed from %s at step %d", self.checkpoints / tag, manifest["step"])
        self.last_checkpoint = int(manifest["step"])
        return manifest

    def _metrics_path(self) -> Path:
        return self.checkpoints / "metrics.jsonl"

    def _trim_metrics(self, step: int) -> None:
        """Keep only steps already covered by the checkpoint we resumed from, one record per
        step in order (the last one written for a step wins); a torn last line (a crash during
        an append) is skipped with a warning. Rewritten atomically."""
        path = self._metrics_path()
        if self.rank != 0 or not path.exists():
            return
        by_step = {}
        for record in read_jsonl(path, required=("step",), torn_tail="skip", bad_lines="skip"):
            if record["step"] <= step:
                by_step[record["step"]] = record
        missing = sorted(set(range(1, step + 1)) - set(by_step))
        if missing:
            log.warning("train: %s lacks the metrics of step(s) %s of the resumed run", path, missing[:10])
        write_jsonl(path, [by_step[s] for s in sorted(by_step)])

    def run(self, stop_after: int | None = None) -> dict | None:
        import torch.distributed as dist

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.last_checkpoint, self.nonfinite_steps, self.skip_step = 0, 0, False
        self._claim_checkpoints()
        resumed = self._resume()
        start = int(resumed.get("step", 0))
        self._trim_metrics(start)
        total = self.hp["steps"]
        started = time.perf_counter()
        # what the outputs need survives in the manifest: a run resumed at its final step writes the same summary
        last, prior_seconds = resumed.get("last", {}), float(resumed.get("wall_seconds", 0.0))
        self.nonfinite_steps = int(resumed.get("nonfinite_steps", 0))
        every = self.tcfg["checkpoint_every"]
        for step in range(start, total):
            step_started = time.perf_counter()
            lr = self.engine.get_lr()[0]  # the rate this step uses (the scheduler advances in engine.step)
            self.skip_step = False
            sums = torch.zeros(len(METRICS) + 1, dtype=torch.float64)
            for micro in range(self.grad_accum):
                metrics = self.micro_step(step, micro)
                sums[:-1] += torch.tensor([float(metrics[k].mean()) for k in METRICS], dtype=torch.float64)
            grad_norm = _float(self.engine.get_global_grad_norm())
            sums[-1] = 0.0 if grad_norm is None or math.isfinite(grad_norm) else 1.0
            if dist.is_initialized() and self.world > 1:  # the last entry: how many ranks saw a non-finite grad norm
                sums = _all_reduce(sums, self.device)
            if sums[-1] > 0 and not self.skip_step:  # the update was applied: these weights cannot go on
                self._stop(step, f"the gradient norm is {grad_norm} (the update is applied: weights discarded)")
            means = (sums[:-1] / (self.grad_accum * self.world)).tolist()
            last = {"step": step + 1, **{k: _finite(v) for k, v in zip(METRICS, means)},
                    "lr": lr, "grad_norm": _finite(grad_norm), "seconds": round(time.perf_counter() - step_started, 4)}
            if self.skip_step:
                self.nonfinite_steps += 1
                last["skipped"] = "non-finite loss"
                log.warning("train: step %d/%d skipped: non-finite loss (%d of at most %d, "
                            "train.max_nonfinite_steps)", step + 1, total, self.nonfinite_steps,
                            self.tcfg.get("max_nonfinite_steps", 0))
            if self.rank == 0:
                append_jsonl(self._metrics_path(), last)
                if not self.skip_step:
                    log.info("train: step %d/%d loss %.4f acc %.3f margin %.3f lr %.3g", step + 1, total,
                             last["loss"], last["implicit_acc"], last["reward_margin"], last["lr"])
            if (step + 1) % every == 0 or step + 1 == total:
                self._save_checkpoint(step + 1, {"last": last, "nonfinite_steps": self.nonfinite_steps,
                                                 "wall_seconds": round(prior_seconds + time.perf_counter() - started, 3)})
            if stop_after is not None and step + 1 >= stop_after and step + 1 < total:
                log.info("train: stopping after step %d as asked (--stop-after)", step + 1)
                return None
        return self._finish(start, started, last, prior_seconds)

    def _finish(self, start: int, started: float, last: dict, prior_seconds: float = 0.0) -> dict | None:
        from diffusers import UNet2DConditionModel

        from agfsync.engine import full_state_dict

        module = self.engine.module
        if self.lora:
            module.fuse_lora()
            module.unload_lora()
        self._check_weights(self.hp["steps"])  # also when the last step's checkpoint was saved by an earlier run
        state = full_state_dict(self.engine, self.tcfg["zero_stage"])
        if self.rank != 0:
            return None
        unet = UNet2DConditionModel.from_config(module.config)
        unet.load_state_dict(state)
        tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        shutil.copy(self._metrics_path(), tmp / "metrics.jsonl")
        peak = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        summary = {
            "model": self.model_name, "steps": self.hp["steps"], "resumed_from_step": start,
            # wall time of all segments of a resumed run (each up to its last checkpoint, then this one)
            "final": last, "wall_seconds": round(prior_seconds + time.perf_counter() - started, 2),
            "nonfinite_steps_skipped": self.nonfinite_steps,
            "peak_memory_bytes": int(peak), "peak_memory_kind": "cuda allocated" if self.device.type == "cuda" else "cpu rss",
            "processes": self.world, "grad_accum": self.grad_accum, "micro_batch": self.hp["micro_batch"],
            "global_batch": self.hp["global_batch"], "zero_stage": self.tcfg["zero_stage"],
            "optimizer": self.tcfg["optimizer"], "loss": self.tcfg["loss"], "lora_rank": self.lora,
            "kernels": "triton" if self.kernels else "torch",  # what ran; the config may say auto
            "cpu_threads": torch.get_num_threads(),  # per process (OMP_NUM_THREADS from config cpu_threads)
            "config_hash": config_hash(self.cfg, self.model_name),
        }
        write_json(tmp / "summary.json", summary)
        shutil.rmtree(self.out_dir, ignore_errors=True)
        tmp.rename(self.out_dir)
        log.info("train: wrote %s (%d steps, final loss %.4f)", self.out_dir, self.hp["steps"], last.get("loss", float("nan")))
        return summary


def _all_reduce(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small CPU tensor over all ranks, on the training device (NCCL reduces CUDA tensors only)."""
    import torch.distributed as dist

    reduced = values.to(device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def _float(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite metric of a skipped step is recorded as null."""
    return value if value is None or math.isfinite(value) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agfsync.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage-config", required=True, help="JSON config (the launcher writes it)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True, help="train cache directory (rule train_cache)")
    parser.add_argument("--out", required=True, help="output directory: unet/, metrics.jsonl, summary.json")
    parser.add_argument("--checkpoints", required=True, help="checkpoint directory (kept across failures)")
    parser.add_argument("--stop-after", type=int, help="stop after this step, once its checkpoint is saved")
    args = parser.parse_args(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker: its own session, so it must watch its agent
        from agfsync.proclife import exit_with_parent, is_torchrun

        exit_with_parent(what=f"train rank {os.environ.get('RANK', '0')}", parent_is=is_torchrun)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s rank" +
                        os.environ.get("RANK", "0") + " %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = json.loads(Path(args.stage_config).read_text())
    try:
        DPOTrainer(cfg, args.model, args.cache, args.checkpoints, args.out).run(stop_after=args.stop_after)
    except (DataError, TrainConfigError, CheckpointError, NonFiniteError) as err:
        log.error("train: %s", err)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
