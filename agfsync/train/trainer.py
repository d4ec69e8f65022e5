"""Stage 5, rule train_dpo: the Diffusion-DPO trainer of the UNet (`DPOTrainer`) and its command line.

Run under torchrun, one process per GPU (gloo processes on a CPU):

    torchrun --standalone --nproc-per-node G -m agfsync.train.trainer --stage-config cfg.json \\
        --model sdxl --cache results/sdxl/train_cache --out results/sdxl/agfsync \\
        --checkpoints results/sdxl/train_checkpoints [--config-digest D]

(agfsync.train.launch.run_training builds that command; the workflow rule calls it.) The
stage config is the stage's typed settings as JSON (`Settings.to_json()`), read back with
`Settings.from_json`: the sections the rule declared (seed, device, cpu_threads,
models.<model>, train), any other read raises.

- DPOTrainer.__init__ runs the build steps of agfsync.train.build in order (backend, process
  group, batch arithmetic, pair cache, UNet, LoRA or reference, placement, Triton kernels,
  DeepSpeed engine), then attaches the checkpoint side (agfsync.train.resume).
- policy: the full UNet in fp32 (master weights), bf16 autocast on GPU; or LoRA adapters
  (train.lora_rank) on a frozen UNet.
- reference: a frozen copy in bf16 on the GPU (never CPU-offloaded); with LoRA, the same
  UNet with its adapters disabled.
- per micro-batch: ONE noise draw and ONE timestep shared by winner and loser (separate
  noise in the authors' variant), both through the policy in one batch, both through the
  reference, loss from agfsync.train.loss. Noise and timesteps are seeded by (seed, step,
  micro, rank), and the pairs by agfsync.train.data.batch_indices: a resumed run draws
  exactly what an uninterrupted one would.
- DeepSpeed ZeRO 0-3 (agfsync.train.engine), gradient accumulation so that micro_batch x
  accumulation x world size = the paper's global batch, clipping, AdamW8bit or AdamW,
  warmup + cosine/constant.
- checkpoints every train.checkpoint_every steps into --checkpoints (not a Snakemake
  output, so a failed job keeps them): saving, resuming and the run's identity are
  agfsync.train.resume; a rerun resumes from the newest intact checkpoint of the same run.
- a non-finite loss or prediction (checked on every micro-batch before backward, agreed by
  all ranks) or gradient norm stops the run with NonFiniteError: no model and no checkpoint
  of that step is written. With train.max_nonfinite_steps N > 0, up to N steps whose loss is
  non-finite are skipped instead (their micro-batches contribute zero gradient and the step
  runs at lr 0, so the weights do not move); the next one stops the run.
- train.snapshots: the UNet also saved at those fractions of the steps
  (agfsync.train.snapshots), copied into the output's snapshots/ at the end.
- train.tracking (agfsync.train.tracking, rank 0): TensorBoard curves under
  <checkpoints>/tensorboard (W&B when enabled), progress lines with an ETA in the log.
- outputs: unet/ in diffusers format (safetensors, fp32), metrics.jsonl (one line per
  step, appended with agfsync.core.io.append_jsonl), summary.json (steps, final metrics, wall
  time summed over resumed segments, peak memory, and `config_hash`: the --config-digest the
  launcher was given, agfsync.core.config.config_digest of the full config for this model,
  null without one).

Shapes: B pairs per micro-batch, C/H/W latent channels/height/width, L tokens, D width.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from agfsync.core.io import DataError, append_jsonl, write_json
from agfsync.core.seeds import derive_seed
from agfsync.train import build, snapshots, tracking
from agfsync.train.build import TrainConfigError  # raised by the build steps, reported by main
from agfsync.train.checkpoints import CheckpointError
from agfsync.train.loss import LOSSES, METRICS, prediction_target
from agfsync.train.resume import CheckpointManager, run_identity
from agfsync.train.tracking import TrackingError, as_float, finite

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger("agfsync.train.trainer")


class NonFiniteError(RuntimeError):
    """A non-finite loss, prediction or gradient norm: the run stops and saves no model."""


class DPOTrainer:
    """Diffusion-DPO on this rank: built by the steps of agfsync.train.build (in that order:
    the order is part of the weights); run() trains, resumes and checkpoints, then writes the
    outputs."""

    def __init__(self, settings: Settings, model_name: str, cache_dir, checkpoints, out_dir,
                 config_digest: str | None = None):
        from agfsync.train.data import PairCache

        self.settings, self.model_name, self.config_digest = settings, model_name, config_digest
        self.train, self.model_settings = settings.train, settings.models[model_name]
        tracking.check_settings(self.train.tracking)  # a missing package fails every rank before anything is built
        self.hp = self.model_settings.train
        self.checkpoints, self.out_dir, self.cache_dir = Path(checkpoints), Path(out_dir), Path(cache_dir)
        # whatever OMP_NUM_THREADS says: CPU float sums, and so the weights, depend on it
        torch.set_num_threads(int(settings.cpu_threads))
        cuda, backend = build.build_backend(settings)  # processes and devices
        self.rank, self.world, self.local_rank, self.device = build.build_distributed(backend, cuda)
        self.autocast = build.use_autocast(self.train.precision, cuda)
        self.grad_accum = build.build_grad_accum(self.hp, model_name, self.world)
        self.cache = PairCache(cache_dir)  # data
        self.sdxl = self.cache.index["family"] == "sdxl"
        unet = build.build_unet(self.model_settings)  # models
        self.noise_scheduler = build.build_noise_scheduler(self.model_settings)
        self.prediction_type = self.model_settings.prediction_type
        self.lora = self.train.lora_rank
        if self.lora:
            build.build_lora(unet, self.lora, self.train, settings.seed, model_name)
        self.reference = None if self.lora else build.build_reference(unet, self.device, self.autocast)
        build.place_models(unet, self.reference, self.train, self.device)
        self.kernels, self.fused_loss = build.build_kernels(unet, self.reference, self.train, self.device)
        self.engine = build.build_deepspeed(unet, self.train, self.hp, self.grad_accum, self.autocast)  # optimizer, ZeRO
        self.loss_fn = LOSSES[self.train.loss]
        self.checkpointer = CheckpointManager(self.checkpoints, self.engine, self.rank, self.world)
        self.last_checkpoint, self.nonfinite_steps, self.skip_step = 0, 0, False
        self.snapshot_steps = snapshots.snapshot_steps(self.train.snapshots, self.hp.steps)

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
        from agfsync.train.data import batch_indices

        seed = self.settings.seed
        indices = batch_indices(seed, len(self.cache), self.hp.global_batch, step, micro, self.rank, self.world,
                                self.hp.micro_batch)
        batch = {k: v.to(self.device) for k, v in self.cache.get(indices).items()}
        x_w, x_l = batch["latents_w"], batch["latents_l"]
        generator = torch.Generator("cpu").manual_seed(derive_seed(seed, "dpo", step, micro, self.rank))
        b = x_w.shape[0]
        noise_w = torch.randn(x_w.shape, generator=generator)
        # One noise draw shared by winner and loser (Wallace et al.); the authors' code draws two.
        separate = self.train.noise == "separate" or self.train.loss == "authors"
        noise_l = torch.randn(x_l.shape, generator=generator) if separate else noise_w
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
            loss, metrics = self.fused_loss(pred, ref, target_w, target_l, self.hp.beta_dpo)
        else:
            loss, metrics = self.loss_fn(pred[:b], pred[b:], ref[:b].float(), ref[b:].float(), target_w, target_l,
                                         self.hp.beta_dpo)
        loss = self._check_finite(step, micro, loss, pred)
        self.engine.backward(loss)
        if self.skip_step and micro == self.grad_accum - 1:  # the optimizer step of a skipped step moves nothing
            for group in self.engine.client_optimizer.param_groups:
                group["lr"] = 0.0  # the lr scheduler, stepped right after, sets the next step's rate again
        self.engine.step()
        return metrics

    # ------------------------------------------------------------------ non-finite guards

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
            allowed = self.train.max_nonfinite_steps
            if self.nonfinite_steps >= allowed:
                value = float(loss.detach().float().mean())
                self._stop(step, f"loss is {value if not math.isfinite(value) else 'non-finite on another rank'} "
                                 f"(micro-batch {micro}; "
                                 f"models.{self.model_name}.train.beta_dpo is {self.hp.beta_dpo}, lr "
                                 f"{self.hp.lr})")
            self.skip_step = True
        return (pred.float() * 0.0).sum()

    def _stop(self, step: int, why: str) -> None:
        allowed = self.train.max_nonfinite_steps
        kept = (f"checkpoints up to step {self.last_checkpoint} kept in {self.checkpoints}" if self.last_checkpoint
                else "no checkpoint kept")
        raise NonFiniteError(f"step {step + 1}: {why}; {self.nonfinite_steps} non-finite step(s) skipped before, "
                             f"train.max_nonfinite_steps is {allowed}: stopping; no model saved; {kept}")

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
                                 f"{self.hp.lr:g} too high, or train.grad_clip off?); nothing of this step is saved")

    # ------------------------------------------------------------------ loop

    def run(self, stop_after: int | None = None) -> dict | None:
        import torch.distributed as dist

        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.last_checkpoint, self.nonfinite_steps, self.skip_step = 0, 0, False
        self.checkpointer.claim(run_identity(self.settings, self.model_name, self.world, self.cache_dir))
        resumed = self.checkpointer.resume()
        start = self.last_checkpoint = int(resumed.get("step", 0))
        self.checkpointer.trim_metrics(start)
        total = self.hp.steps
        started = time.perf_counter()
        # what the outputs need survives in the manifest: a run resumed at its final step writes the same summary
        last, prior_seconds = resumed.get("last", {}), float(resumed.get("wall_seconds", 0.0))
        self.nonfinite_steps = int(resumed.get("nonfinite_steps", 0))
        every = self.train.checkpoint_every
        with tracking.Tracker.for_trainer(self, start, prior_seconds) as tracker:  # rank 0 writes, closed at the end
            for step in range(start, total):
                step_started = time.perf_counter()
                lr = self.engine.get_lr()[0]  # the rate this step uses (the scheduler advances in engine.step)
                self.skip_step = False
                sums = torch.zeros(len(METRICS) + 1, dtype=torch.float64)
                for micro in range(self.grad_accum):
                    metrics = self.micro_step(step, micro)
                    sums[:-1] += torch.tensor([float(metrics[k].mean()) for k in METRICS], dtype=torch.float64)
                grad_norm = as_float(self.engine.get_global_grad_norm())
                sums[-1] = 0.0 if grad_norm is None or math.isfinite(grad_norm) else 1.0
                if dist.is_initialized() and self.world > 1:  # last entry: how many ranks saw a non-finite grad norm
                    sums = _all_reduce(sums, self.device)
                if sums[-1] > 0 and not self.skip_step:  # the update was applied: these weights cannot go on
                    self._stop(step, f"the gradient norm is {grad_norm} (the update is applied: weights discarded)")
                means = (sums[:-1] / (self.grad_accum * self.world)).tolist()
                last = {"step": step + 1, **{k: finite(v) for k, v in zip(METRICS, means)}, "lr": lr,
                        "grad_norm": finite(grad_norm), "seconds": round(time.perf_counter() - step_started, 4)}
                if self.skip_step:
                    self.nonfinite_steps += 1
                    last["skipped"] = "non-finite loss"
                    log.warning("train: step %d/%d skipped: non-finite loss (%d of at most %d, "
                                "train.max_nonfinite_steps)", step + 1, total, self.nonfinite_steps,
                                self.train.max_nonfinite_steps)
                if self.rank == 0:
                    append_jsonl(self.checkpointer.metrics_path, last)
                tracker.step(last)  # curves every step, a progress line every train.tracking.log_every
                if step + 1 in self.snapshot_steps:  # before the checkpoint: a resume from it never lacks the snapshot
                    self._check_weights(step + 1)
                    snapshots.save(self.engine, self.train.zero_stage, bool(self.lora), self.rank, self.checkpoints,
                                   step + 1)
                if (step + 1) % every == 0 or step + 1 == total:
                    self._check_weights(step + 1)
                    wall = round(prior_seconds + time.perf_counter() - started, 3)
                    self.checkpointer.save(step + 1, {"last": last, "nonfinite_steps": self.nonfinite_steps,
                                                      "wall_seconds": wall}, self.train.keep_checkpoints)
                    self.last_checkpoint = step + 1
                    tracker.flush()
                if stop_after is not None and step + 1 >= stop_after and step + 1 < total:
                    log.info("train: stopping after step %d as asked (--stop-after)", step + 1)
                    return None
            return self._finish(start, started, last, prior_seconds)

    def _finish(self, start: int, started: float, last: dict, prior_seconds: float = 0.0) -> dict | None:
        from diffusers import UNet2DConditionModel

        from agfsync.train import export
        from agfsync.train.engine import full_state_dict

        module = self.engine.module
        adapter = export.adapter_state(module) if self.lora else None  # before fusing: the adapters alone
        if self.lora:
            module.fuse_lora()
            module.unload_lora()
        self._check_weights(self.hp.steps)  # also when the last step's checkpoint was saved by an earlier run
        state = full_state_dict(self.engine, self.train.zero_stage)
        if self.rank != 0:
            return None
        unet = UNet2DConditionModel.from_config(module.config)
        unet.load_state_dict(state)
        tmp = self.out_dir.with_name(f".{self.out_dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unet.save_pretrained(tmp / "unet", safe_serialization=True)
        shutil.copy(self.checkpointer.metrics_path, tmp / "metrics.jsonl")
        taken = snapshots.collect(self.checkpoints, tmp, self.snapshot_steps)
        peak = (torch.cuda.max_memory_allocated(self.device) if self.device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        summary = {
            "model": self.model_name, "steps": self.hp.steps, "resumed_from_step": start,
            # wall time of all segments of a resumed run (each up to its last checkpoint, then this one)
            "final": last, "wall_seconds": round(prior_seconds + time.perf_counter() - started, 2),
            "nonfinite_steps_skipped": self.nonfinite_steps,
            "peak_memory_bytes": int(peak), "peak_memory_kind": "cuda allocated" if self.device.type == "cuda" else "cpu rss",
            "processes": self.world, "grad_accum": self.grad_accum, "micro_batch": self.hp.micro_batch,
            "global_batch": self.hp.global_batch, "zero_stage": self.train.zero_stage,
            "optimizer": self.train.optimizer, "loss": self.train.loss, "noise": self.train.noise,
            "lora_rank": self.lora, "snapshots": taken,
            "kernels": "triton" if self.kernels else "torch",  # what ran; the config may say auto
            "cpu_threads": torch.get_num_threads(),  # per process (OMP_NUM_THREADS from config cpu_threads)
            # agfsync.core.config.config_digest of the full config for this model, from the launcher (null without)
            "config_hash": self.config_digest,
        }
        write_json(tmp / "summary.json", summary)
        export.write_extras(tmp, summary, unet, adapter, self.model_settings, pairs=len(self.cache))  # card, LoRA, fp16
        shutil.rmtree(self.out_dir, ignore_errors=True)
        tmp.rename(self.out_dir)
        log.info("train: wrote %s (%d steps, final loss %.4f)", self.out_dir, self.hp.steps, last.get("loss", float("nan")))
        return summary


def _all_reduce(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a small CPU tensor over all ranks, on the training device (NCCL reduces CUDA tensors only)."""
    import torch.distributed as dist

    reduced = values.to(device)
    dist.all_reduce(reduced)
    return reduced.cpu()


def main(argv: list[str] | None = None) -> int:
    from agfsync.core.codestamp import report_child_modules

    report_child_modules()  # the modules this worker runs belong to the train_dpo job's record
    parser = argparse.ArgumentParser(prog="python -m agfsync.train.trainer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage-config", required=True,
                        help="the stage's settings as JSON (Settings.to_json; the launcher writes it)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--cache", required=True, help="train cache directory (rule train_cache)")
    parser.add_argument("--out", required=True, help="output directory: unet/, metrics.jsonl, summary.json")
    parser.add_argument("--checkpoints", required=True, help="checkpoint directory (kept across failures)")
    parser.add_argument("--stop-after", type=int, help="stop after this step, once its checkpoint is saved")
    parser.add_argument("--config-digest", help="the full config's digest for this model (agfsync.core.config."
                        "config_digest), recorded in summary.json as config_hash")
    args = parser.parse_args(argv)
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a torchrun worker: its own session, so it must watch its agent
        from agfsync.core.proclife import exit_with_parent, is_torchrun

        exit_with_parent(what=f"train rank {os.environ.get('RANK', '0')}", parent_is=is_torchrun)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s rank" +
                        os.environ.get("RANK", "0") + " %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("DeepSpeed", "deepspeed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from agfsync.core.sections import Settings

    settings = Settings.from_json(Path(args.stage_config).read_text())
    try:
        DPOTrainer(settings, args.model, args.cache, args.checkpoints, args.out,
                   config_digest=args.config_digest).run(stop_after=args.stop_after)
    except (DataError, TrainConfigError, CheckpointError, NonFiniteError, TrackingError) as err:
        log.error("train: %s", err)
        return 2
    finally:
        import torch.distributed as dist

        if dist.is_initialized():  # through DeepSpeed, which then drops its references to the groups too
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
