"""What the trainer reports while it runs (rule train_dpo): TensorBoard curves, Weights & Biases
when enabled, and progress lines with an ETA in the log (config `train.tracking`).

Operational (agfsync.core.config.OPERATIONAL_SECTIONS, agfsync.train.resume.NOT_IDENTITY):
editing `train.tracking` neither reruns the training nor starts it again from step 0; nothing
here touches the weights, the data order or the random draws.

- where: `<checkpoints>/tensorboard/` (and `<checkpoints>/wandb/`), i.e.
  results/<model>/train_checkpoints/tensorboard: the checkpoint directory survives a failed
  or stopped job and is resumed from, so the curves of all segments of a resumed run land in
  one place; the fine-tuned model directory (the rule's output, the folder users share) stays
  free of them. They go with the checkpoints: a run of another identity (agfsync.train.resume
  .run_identity) deletes that directory and starts its curves afresh.
  View: `tensorboard --logdir results/<model>/train_checkpoints/tensorboard`.
- TensorBoard (`train.tracking.tensorboard`, on by default): every step, the scalars
  train/loss, train/implicit_accuracy, train/reward_margin, train/lr, train/grad_norm (the
  values written to metrics.jsonl; a skipped step's null metrics are left out),
  train/pairs_per_s and train/eta_s; global step = the 1-based step of metrics.jsonl.
  Flushed at every checkpoint, closed at the end (also on an error). A resumed run opens its
  writer with purge_step = the restored step + 1: the steps the crashed segment logged past
  its last checkpoint are dropped by TensorBoard, so no step appears twice.
- W&B (`train.tracking.wandb.enabled`, off by default): imported only then; mode offline by
  default (run files under <checkpoints>/wandb, `wandb sync` uploads them), online needs
  WANDB_API_KEY in the environment, which W&B reads itself: no key is ever passed, written
  or logged here. The run id is stable for the checkpoint directory's run, so a resumed run
  continues the same W&B run (resume="allow").
- progress lines every `train.tracking.log_every` steps (and the first and last step of a
  segment), through this module's logger (the rule's log receives the trainer's output):
  `train: step 120/400 (30%) loss 0.6812 acc 0.58 margin 0.012 lr 1.0e-05 | 3.1 pairs/s |
  elapsed 0:02:10, ETA 0:05:03`. Rates are averages over this segment (since the start or the
  resume, checkpoint saves included); elapsed counts the earlier segments too.

Only rank 0 writes; every rank checks the settings first (`check_settings`), so a missing
package fails all of them at once, before any model is built. The helpers above `Tracker`
are pure (no torch).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

# TensorBoard tag -> key of a metrics.jsonl record
SCALARS = {"train/loss": "loss", "train/implicit_accuracy": "implicit_acc", "train/reward_margin": "reward_margin",
           "train/lr": "lr", "train/grad_norm": "grad_norm"}


class TrackingError(ValueError):
    """A train.tracking setting that cannot work here (a package missing, no W&B key)."""


# ------------------------------------------------------------------ pure helpers


def as_float(value) -> float | None:
    """A Python float of a number or a one-element tensor (None stays None)."""
    if value is None:
        return None
    return float(value.item() if hasattr(value, "item") else value)


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a non-finite metric of a skipped step is recorded as null."""
    return value if value is None or math.isfinite(value) else None


def format_duration(seconds: float | None) -> str:
    """H:MM:SS, rounded to the second (hours go past 24); '?' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def rate(count: float, seconds: float) -> float | None:
    """count per second; None before any time has passed."""
    return count / seconds if seconds > 0 else None


def eta_seconds(done: int, remaining: int, seconds: float) -> float | None:
    """Seconds left for `remaining` steps at the pace of the `done` steps that took `seconds`."""
    if remaining <= 0:
        return 0.0
    if done <= 0 or seconds <= 0:
        return None
    return remaining * seconds / done


def _fmt(value, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def progress_line(step: int, total: int, record: dict, pairs_per_s: float | None, elapsed_s: float | None,
                  eta_s: float | None) -> str:
    """`step 120/400 (30%) loss 0.6812 acc 0.58 margin 0.012 lr 1.0e-05 | 3.1 pairs/s | elapsed
    0:02:10, ETA 0:05:03` ('-' for a metric a skipped step does not have)."""
    percent = int(100 * step / total) if total else 100
    return (f"step {step}/{total} ({percent}%) loss {_fmt(record.get('loss'), '.4f')} "
            f"acc {_fmt(record.get('implicit_acc'), '.2f')} margin {_fmt(record.get('reward_margin'), '.3f')} "
            f"lr {_fmt(record.get('lr'), '.1e')} | {_fmt(pairs_per_s, '.1f')} pairs/s | "
            f"elapsed {format_duration(elapsed_s)}, ETA {format_duration(eta_s)}")


def scalars(record: dict, pairs_per_s: float | None, eta_s: float | None) -> dict[str, float]:
    """The scalars of one metrics.jsonl record, by tag; missing and non-finite values left out."""
    values = {tag: record.get(key) for tag, key in SCALARS.items()}
    values.update({"train/pairs_per_s": pairs_per_s, "train/eta_s": eta_s})
    return {tag: float(v) for tag, v in values.items() if v is not None and math.isfinite(v)}


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def check_settings(tracking, environ=None) -> None:
    """Raise TrackingError when train.tracking asks for what this machine lacks."""
    environ = os.environ if environ is None else environ
    if tracking.tensorboard and not installed("tensorboard"):
        raise TrackingError("train.tracking.tensorboard is true but the tensorboard package is not installed: "
                            "pip install tensorboard (a dependency of agfsync), or set it to false")
    wandb = tracking.wandb
    if not wandb.enabled:
        return
    if not installed("wandb"):
        raise TrackingError("train.tracking.wandb.enabled is true but the wandb package is not installed: "
                            "pip install wandb (it is not a dependency of agfsync), or set "
                            "train.tracking.wandb.enabled to false")
    if wandb.mode == "online" and not environ.get("WANDB_API_KEY"):
        raise TrackingError("train.tracking.wandb.mode is online but WANDB_API_KEY is not set in the environment "
                            "(the only place the key is read from); or use mode offline and `wandb sync` later")


def wandb_run_id(identity_text: str, model_name: str) -> str:
    """A W&B run id stable for one run of one checkpoint directory (its identity.json)."""
    return hashlib.sha256(f"{model_name}\n{identity_text}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------ the tracker


class Tracker:
    """One training segment's reporting: `step(record)` after every step (rank 0 writes, other
    ranks do nothing), `flush()` at checkpoints, `close()` (or the with block) at the end."""

    def __init__(self, tracking, directory, *, start: int, total: int, pairs_per_step: int, rank: int = 0,
                 prior_seconds: float = 0.0, run_name: str = "agfsync", run_id: str | None = None,
                 run_config: dict | None = None, clock=time.perf_counter):
        check_settings(tracking)
        self.tracking, self.directory = tracking, Path(directory)
        self.start, self.total, self.pairs_per_step = int(start), int(total), int(pairs_per_step)
        self.active, self.prior_seconds, self.clock = rank == 0, float(prior_seconds), clock
        self.started = clock()
        self.writer = self.wandb = None
        if not self.active:
            return
        if tracking.tensorboard:
            self.writer = open_tensorboard(self.directory / "tensorboard", self.start)
        if tracking.wandb.enabled:
            self.wandb = open_wandb(tracking.wandb, self.directory, run_name, run_id, run_config)

    @classmethod
    def for_trainer(cls, trainer, start: int, prior_seconds: float = 0.0) -> Tracker:
        """The tracker of a DPOTrainer (agfsync.train.trainer) resumed at `start`."""
        identity = trainer.checkpoints / "identity.json"
        run_id = wandb_run_id(identity.read_text() if identity.exists() else "", trainer.model_name)
        w = trainer.train.tracking.wandb
        config = None
        if trainer.rank == 0 and w.enabled:  # the settings of this run: no secrets among them
            config = {"model": trainer.model_name, "seed": trainer.settings.seed,
                      "model_settings": trainer.model_settings.to_dict(), "train": trainer.train.to_dict(),
                      "processes": trainer.world, "grad_accum": trainer.grad_accum}
        return cls(trainer.train.tracking, trainer.checkpoints, start=start, total=trainer.hp.steps,
                   pairs_per_step=trainer.hp.global_batch, rank=trainer.rank, prior_seconds=prior_seconds,
                   run_name=w.name or f"{trainer.model_name}-{trainer.out_dir.name}", run_id=run_id,
                   run_config=config)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def rates(self, step: int) -> tuple[float | None, float | None, float]:
        """(pairs/s, ETA seconds, elapsed seconds of the whole run) after `step` (1-based)."""
        seconds = self.clock() - self.started
        done = step - self.start
        return (rate(done * self.pairs_per_step, seconds), eta_seconds(done, self.total - step, seconds),
                self.prior_seconds + seconds)

    def step(self, record: dict) -> None:
        """Report one metrics.jsonl record (its "step" is 1-based)."""
        if not self.active:
            return
        step = int(record["step"])
        pairs_per_s, eta, elapsed = self.rates(step)
        values = scalars(record, pairs_per_s, eta)
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)
        if self.wandb is not None:
            self.wandb.log(values, step=step)
        every = self.tracking.log_every
        if step % every == 0 or step == self.total or step == self.start + 1:
            log.info("train: %s", progress_line(step, self.total, record, pairs_per_s, elapsed, eta))

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def open_tensorboard(log_dir: Path, start: int):
    """A SummaryWriter into log_dir; events of steps after `start` (written by a segment that
    crashed past its last checkpoint) are purged: purge_step = start + 1."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    log.info("train: TensorBoard event files in %s (from step %d)", log_dir, start + 1)
    return SummaryWriter(log_dir=str(log_dir), purge_step=start + 1)


def open_wandb(settings, directory: Path, name: str, run_id: str | None, config: dict | None):
    """wandb.init in the configured mode; W&B reads WANDB_API_KEY itself (online mode)."""
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=settings.project, name=name, mode=settings.mode, dir=str(directory), id=run_id,
                     resume="allow", config=config)
    log.info("train: W&B run %s (project %s, mode %s) under %s", name, settings.project, settings.mode,
             directory / "wandb")
    return run
