"""The trainer's checkpoint side: whose checkpoints a directory holds, resuming from them,
saving into them, and the metrics log kept next to them.

agfsync.train.checkpoints deals with the files of one checkpoint (safe loading, manifests,
choosing, pruning); this module is what the running trainer (agfsync.train.trainer) does
with them, on every rank:

- identity: a checkpoint directory is claimed by one run, named by a hash of the training
  config (less the checkpointing settings), the number of processes and the exact pair
  cache. Checkpoints of another identity (a changed lr, regenerated pairs) are deleted, so
  the run starts from step 0 instead of continuing the old weights under the new name.
- resume: rank 0 picks the newest intact checkpoint (newer, broken ones are moved to
  <checkpoints>/rejected/, never deleted) and broadcasts its choice, so every rank loads
  the same tag through DeepSpeed (with agfsync.train.checkpoints' safe loader).
- save: EVERY rank calls DeepSpeed's save_checkpoint (rank-0-only saving is the known
  DeepSpeed hang, docs/method.md, Diffusion-DPO); after all ranks saved, rank 0 writes the tag's
  manifest (the step, the last metrics, the training time so far), then `latest`, and
  prunes old tags.
- metrics.jsonl lives in the checkpoint directory (a failed job keeps it); on resume it is
  trimmed to the steps the checkpoint covers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from agfsync.core.io import read_jsonl, sha256_file, write_json, write_jsonl
from agfsync.train import checkpoints as ckpt
from agfsync.train.checkpoints import CheckpointError

if TYPE_CHECKING:
    from agfsync.core.sections import Settings

log = logging.getLogger(__name__)

# train settings a checkpoint does not depend on: raising max_nonfinite_steps after a stop
# resumes the same run, as does switching tracking (TensorBoard, W&B) on; the world size
# counts, as `processes`
NOT_IDENTITY = ("checkpoint_every", "keep_checkpoints", "max_nonfinite_steps", "launch", "tracking", "gpus", "nodes")


def run_identity(settings: Settings, model_name: str, world: int, cache_dir: Path) -> dict:
    """What a checkpoint must have been trained on to be resumed: the training config (less
    the checkpointing settings), the number of processes, and the exact pair cache. The hash
    is of the sections as config mappings (`to_dict()`), so it is the one the config dicts
    gave before the settings were typed: existing checkpoints are still resumed."""
    train = {k: v for k, v in settings.train.to_dict().items() if k not in NOT_IDENTITY}
    relevant = {"seed": settings.seed, "model": settings.models[model_name].to_dict(), "train": train,
                "processes": world}
    return {"config": hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16],
            "cache": sha256_file(Path(cache_dir) / "index.json")[:16]}


class CheckpointManager:
    """One run's checkpoint directory, seen from one rank; every rank calls every method."""

    def __init__(self, directory: Path, engine, rank: int, world: int):
        self.directory, self.engine, self.rank, self.world = Path(directory), engine, rank, world

    @property
    def metrics_path(self) -> Path:
        return self.directory / "metrics.jsonl"

    def barrier(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized() and self.world > 1:
            dist.barrier()

    def claim(self, identity: dict) -> None:
        """Checkpoints of another identity are never resumed: they are deleted, and this run
        starts from step 0. Writes identity.json."""
        marker = self.directory / "identity.json"
        if self.rank == 0:
            found = json.loads(marker.read_text()) if marker.exists() else None
            if found != identity and ckpt.tag_dirs(self.directory):
                log.warning("train: checkpoints in %s were trained on %s, this run is %s: starting from step 0",
                            self.directory, found, identity)
                shutil.rmtree(self.directory)
            self.directory.mkdir(parents=True, exist_ok=True)
            write_json(marker, identity)
        self.barrier()

    def resume(self) -> dict:
        """The manifest of the checkpoint loaded into the engine ({} when starting at step 0)."""
        import torch.distributed as dist

        choice = [None]
        if self.rank == 0:
            ckpt.adopt_legacy(self.directory)  # written by an agfsync without manifests: checked once, adopted
            found = ckpt.choose(self.directory)
            newest = found[0] if found else None
            for tag_dir in ckpt.tag_dirs(self.directory):
                if newest is None or ckpt.tag_step(tag_dir.name) > ckpt.tag_step(newest):
                    ckpt.set_aside(self.directory, tag_dir)  # skipped by choose, with a warning naming it; kept
            if found is None and (self.directory / "latest").exists():
                log.warning("train: no complete checkpoint in %s: starting from step 0", self.directory)
                (self.directory / "latest").unlink()
            choice = [found]
        if dist.is_initialized() and self.world > 1:
            dist.broadcast_object_list(choice, src=0)
        if choice[0] is None:
            return {}
        tag, manifest = choice[0]
        _, client_state = self.engine.load_checkpoint(str(self.directory), tag=tag)
        if client_state is None or int(client_state.get("step", -1)) != int(manifest["step"]):
            raise CheckpointError(f"{self.directory / tag}: DeepSpeed loaded step "
                                  f"{None if client_state is None else client_state.get('step')}, its manifest says "
                                  f"{manifest['step']}")
        log.info("train: resumed from %s at step %d", self.directory / tag, manifest["step"])
        return manifest

    def trim_metrics(self, step: int) -> None:
        """Keep only steps already covered by the checkpoint resumed from, one record per step
        in order (the last one written for a step wins); a torn last line (a crash during an
        append) is skipped with a warning. Rewritten atomically, by rank 0."""
        path = self.metrics_path
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

    def save(self, step: int, state: dict, keep: int) -> None:
        """Checkpoint `step`, complete (manifest, then `latest`) only once every rank saved;
        then keep the newest `keep` tags (never the one just verified). `state` goes into the
        manifest: what the outputs of a run resumed at its final step need."""
        tag = ckpt.tag_name(step)
        if self.rank == 0:  # a leftover of an interrupted run (and its manifest) must not mix with this save
            shutil.rmtree(self.directory / tag, ignore_errors=True)
        self.barrier()
        self.engine.save_checkpoint(str(self.directory), tag=tag, client_state={"step": step}, save_latest=False)
        self.barrier()
        if self.rank == 0:
            ckpt.write_manifest(self.directory, step, state)
            ckpt.prune(self.directory, keep, tag)  # a full SDXL checkpoint is tens of GB
