"""Training checkpoints on disk: safe loading, completeness manifests, choosing what to resume.

- Loading never unpickles arbitrary objects: DeepSpeed's default checkpoint engine calls
  `torch.load(weights_only=False)`, so a crafted `.pt` file in the checkpoint directory
  would run code on resume. `SafeCheckpointEngine` (installed on the engine by
  agfsync.train.engine.build_engine) loads with `weights_only=True` and allow-lists exactly the
  few non-tensor types DeepSpeed writes (see SAFE_GLOBALS); anything else is refused with
  a CheckpointError naming the file.
- A checkpoint `<dir>/<tag>/` is complete only when its manifest `<tag>/COMPLETE.json`
  exists: written by rank 0 after every rank has saved (after the barrier), atomically,
  with each file's size and sha256, the step, and what the final outputs need (the last
  step's metrics, the training time so far). `latest` is written after the manifest.
- On resume, tags are tried newest first; one without a manifest, or whose files do not
  match it (truncated, changed, missing), is skipped with a warning naming it and the bad
  file. Rank 0 decides and broadcasts the tag, so all ranks load the same one.
"""

from __future__ import annotations

import logging
import pickle
import re
from pathlib import Path

import torch

from agfsync.core.io import read_json, sha256_file, write_json, write_text

log = logging.getLogger("agfsync.train.checkpoints")

MANIFEST = "COMPLETE.json"
TAG = re.compile(r"step(\d+)")


class CheckpointError(RuntimeError):
    """A checkpoint file that must not or cannot be loaded; the message names the file."""


def tag_name(step: int) -> str:
    return f"step{step:06d}"


def tag_step(tag: str) -> int:
    return int(TAG.fullmatch(tag).group(1))


def tag_dirs(checkpoints: Path) -> list[Path]:
    """Checkpoint tag directories, oldest first (by step number)."""
    found = [(int(m.group(1)), p) for p in Path(checkpoints).glob("step*")
             if p.is_dir() and (m := TAG.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


# ---------------------------------------------------------------------------------- safe loading

def safe_globals() -> list:
    """The non-tensor types DeepSpeed (ZeRO 0-3, torch or bitsandbytes optimizers) pickles
    into its checkpoint files, beyond what `weights_only=True` allows by default (tensors,
    dicts, lists, tuples, sets, OrderedDict, torch.Size, dtypes, primitive values)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler, DynamicLossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def safe_load(path, map_location=None):
    """torch.load without arbitrary unpickling; CheckpointError naming the file otherwise."""
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: refusing to load a checkpoint file that holds objects other than tensors "
                              f"and plain values (it could run code): {first}") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint file ({err})") from None


def install_safe_loader(engine) -> None:
    """Replace the engine's checkpoint engine by one whose load is `safe_load` (saving is unchanged)."""
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    current = engine.checkpoint_engine
    if type(current) is not TorchCheckpointEngine:  # another engine (nebula, decoupled) would bypass ours
        raise CheckpointError(f"DeepSpeed uses checkpoint engine {type(current).__name__}; agfsync only loads "
                              "checkpoints through its safe torch engine")

    class SafeCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            return safe_load(path, map_location=map_location)

    safe = SafeCheckpointEngine.__new__(SafeCheckpointEngine)
    safe.__dict__.update(current.__dict__)
    engine.checkpoint_engine = safe


# ---------------------------------------------------------------------------------- manifests

def _files(tag_dir: Path) -> list[Path]:
    return sorted(p for p in tag_dir.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(checkpoints: Path, step: int, state: dict) -> Path:
    """Rank 0, after every rank has saved tag `step`: the manifest (atomic), then `latest`."""
    tag_dir = Path(checkpoints) / tag_name(step)
    files = {p.relative_to(tag_dir).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in _files(tag_dir)}
    if not files:
        raise CheckpointError(f"{tag_dir}: the checkpoint of step {step} holds no files")
    manifest = tag_dir / MANIFEST
    write_json(manifest, {"tag": tag_dir.name, "step": step, "files": files, **state})
    write_text(Path(checkpoints) / "latest", tag_dir.name)
    return manifest


def verify(tag_dir: Path) -> tuple[dict | None, str]:
    """(manifest, "") for a complete, intact checkpoint; (None, why) naming the bad file otherwise."""
    manifest_path = tag_dir / MANIFEST
    if not manifest_path.exists():
        return None, f"{manifest_path} is missing (an interrupted save)"
    try:
        manifest = read_json(manifest_path)
        files, step = manifest["files"], int(manifest["step"])
    except Exception as err:  # noqa: BLE001 - any unreadable manifest makes the checkpoint unusable
        return None, f"{manifest_path} is unreadable ({err})"
    if TAG.fullmatch(tag_dir.name) is None or int(TAG.fullmatch(tag_dir.name).group(1)) != step:
        return None, f"{manifest_path} is for step {step}, not {tag_dir.name}"
    for rel, expected in files.items():
        path = tag_dir / rel
        if not path.is_file():
            return None, f"{path} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return None, f"{path} has {size} bytes, the manifest says {expected['bytes']} (truncated or changed)"
        if sha256_file(path) != expected["sha256"]:
            return None, f"{path} does not match its sha256 in the manifest (corrupted or changed)"
    extra = sorted(p.relative_to(tag_dir).as_posix() for p in _files(tag_dir))
    unknown = [rel for rel in extra if rel not in files]
    if unknown:
        return None, f"{tag_dir / unknown[0]} is not in the manifest (added after the save)"
    return manifest, ""


def choose(checkpoints: Path) -> tuple[str, dict] | None:
    """(tag, manifest) of the newest complete, intact checkpoint, or None; warns for each one skipped."""
    for tag_dir in reversed(tag_dirs(checkpoints)):
        manifest, why = verify(tag_dir)
        if manifest is not None:
            return tag_dir.name, manifest
        log.warning("train: not resuming from checkpoint %s: %s; trying the previous one", tag_dir, why)
    return None


def prune(checkpoints: Path, keep: int, verified: str) -> None:
    """Delete all but the newest `keep` checkpoints; never the verified one just written."""
    import shutil

    tags = tag_dirs(checkpoints)
    for old in tags[:-keep] if keep else tags:
        if old.name != verified:
            shutil.rmtree(old, ignore_errors=True)


REJECTED = "rejected"


def set_aside(checkpoints: Path, tag_dir: Path) -> Path:
    """Move a checkpoint that failed verification to <checkpoints>/rejected/ (never deleted:
    it may be evidence, or the only copy of a long run), where no resume or prune looks."""
    target = Path(checkpoints) / REJECTED / tag_dir.name
    suffix = 1
    while target.exists():
        target = Path(checkpoints) / REJECTED / f"{tag_dir.name}.{suffix}"
        suffix += 1
    target.parent.mkdir(parents=True, exist_ok=True)
    tag_dir.rename(target)
    log.warning("train: moved checkpoint %s aside to %s (not resumed; delete it when not needed)", tag_dir, target)
    return target


def adopt_legacy(checkpoints: Path) -> str | None:
    """Checkpoints written before manifests existed (no tag has one) are not thrown away on
    upgrade: the tag `latest` names is checked once, each file loaded with safe_load
    (weights_only, so a planted file runs nothing), and adopted with a manifest. Returns
    the adopted tag, or None (nothing legacy, or the tag failed the check: set aside)."""
    checkpoints = Path(checkpoints)
    tags = tag_dirs(checkpoints)
    latest = checkpoints / "latest"
    if not tags or any((t / MANIFEST).exists() for t in tags) or not latest.exists():
        return None
    tag_dir = checkpoints / latest.read_text().strip()
    if tag_dir not in tags:
        return None
    try:
        for path in _files(tag_dir):
            if path.suffix == ".pt":
                safe_load(path, map_location="cpu")
    except CheckpointError as err:
        log.warning("train: checkpoint %s has no manifest (an earlier agfsync) and fails its check: %s", tag_dir, err)
        set_aside(checkpoints, tag_dir)
        return None
    log.warning("train: adopting checkpoint %s, written by an earlier agfsync without a manifest: every file "
                "loaded once as weights only; the summary of a run resumed at its last step lacks the final metrics",
                tag_dir)
    write_manifest(checkpoints, tag_step(tag_dir.name), {"legacy": True})
    return tag_dir.name
