"""Training curves and progress lines (agfsync.train.tracking, config train.tracking): the pure
helpers (ETA, durations, the progress line), the W&B checks, and one short tiny run, stopped and
resumed, whose TensorBoard event files are read back and compared with metrics.jsonl."""

from __future__ import annotations

import re

import numpy as np
import pytest
from train_helpers import metrics, toy_cache, toy_config, train_in_process

from agfsync.core.sections import TrackingSettings
from agfsync.train import tracking
from agfsync.train.tracking import TrackingError

TAGS = {"train/loss": "loss", "train/implicit_accuracy": "implicit_acc", "train/reward_margin": "reward_margin",
        "train/lr": "lr", "train/grad_norm": "grad_norm"}


def test_train_tracking_durations_rates_and_eta_golden_values():
    fmt = tracking.format_duration
    assert [fmt(s) for s in (0, 0.4, 59.6, 130, 303, 3600, 27 * 3600 + 61, -5)] == [
        "0:00:00", "0:00:00", "0:01:00", "0:02:10", "0:05:03", "1:00:00", "27:01:01", "0:00:00"]
    assert [fmt(s) for s in (None, float("inf"), float("nan"))] == ["?", "?", "?"]
    assert tracking.rate(12, 4.0) == 3.0 and tracking.rate(5, 0.0) is None
    assert tracking.eta_seconds(done=10, remaining=30, seconds=20.0) == 60.0
    assert tracking.eta_seconds(done=0, remaining=30, seconds=1.0) is None  # no pace yet
    assert tracking.eta_seconds(done=10, remaining=0, seconds=20.0) == 0.0  # the last step


def test_train_tracking_progress_line_format():
    record = {"step": 120, "loss": 0.681234, "implicit_acc": 0.5812, "reward_margin": 0.01234, "lr": 1e-5}
    assert tracking.progress_line(120, 400, record, 3.14, 130.2, 302.8) == (
        "step 120/400 (30%) loss 0.6812 acc 0.58 margin 0.012 lr 1.0e-05 | 3.1 pairs/s | "
        "elapsed 0:02:10, ETA 0:05:03")
    skipped = {"step": 2, "loss": None, "implicit_acc": None, "reward_margin": None, "lr": 1e-3}
    assert tracking.progress_line(2, 6, skipped, None, 1.0, None) == (
        "step 2/6 (33%) loss - acc - margin - lr 1.0e-03 | - pairs/s | elapsed 0:00:01, ETA ?")
    # a skipped step's nulls are left out of the curves, never written as 0
    assert tracking.scalars(skipped, None, None) == {"train/lr": 1e-3}


def test_train_tracking_defaults_and_wandb_checks(monkeypatch):
    default = TrackingSettings.from_dict({})
    assert (default.tensorboard, default.log_every, default.wandb.enabled, default.wandb.mode,
            default.wandb.project, default.wandb.name) == (True, 10, False, "offline", "agfsync", None)
    tracking.check_settings(default)  # nothing asked that is missing
    monkeypatch.setattr(tracking, "installed", lambda name: name != "wandb")
    enabled = TrackingSettings.from_dict({"wandb": {"enabled": True}})
    with pytest.raises(TrackingError, match=r"train\.tracking\.wandb\.enabled is true but the wandb package is not "
                                            r"installed: pip install wandb"):
        tracking.check_settings(enabled)
    monkeypatch.setattr(tracking, "installed", lambda name: True)
    tracking.check_settings(enabled, environ={})  # offline: no key needed
    online = TrackingSettings.from_dict({"wandb": {"enabled": True, "mode": "online"}})
    with pytest.raises(TrackingError, match=r"train\.tracking\.wandb\.mode is online but WANDB_API_KEY is not set"):
        tracking.check_settings(online, environ={})
    tracking.check_settings(online, environ={"WANDB_API_KEY": "x" * 40})


def test_train_tracking_wandb_without_the_package_fails_the_trainer_before_anything_is_built(
        demo_config_module, tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda name: name != "wandb")
    cfg = toy_config(demo_config_module, tmp_path / "no_models", tracking={"wandb": {"enabled": True}})
    result = train_in_process(cfg, tmp_path / "no_cache", tmp_path / "out", tmp_path / "ckpt")
    assert result.returncode == 2  # main reports it: no model, no cache was read
    assert "train.tracking.wandb.enabled is true but the wandb package is not installed: pip install wandb" in (
        result.stderr)


def test_train_tracking_wandb_run_offline_by_default_logs_every_step_and_finishes(tmp_path, monkeypatch):
    """A stand-in wandb module: what the tracker asks of W&B (no key is ever passed)."""
    import sys
    import types

    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", step, values))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(tracking, "installed", lambda name: True)
    settings = TrackingSettings.from_dict({"tensorboard": False, "log_every": 5, "wandb": {"enabled": True}})
    clock = iter([100.0, 104.0, 108.0]).__next__
    with tracking.Tracker(settings, tmp_path, start=0, total=4, pairs_per_step=8, run_name="sd15-agfsync",
                          run_id="abc", run_config={"seed": 1}, clock=clock) as tracker:
        tracker.step({"step": 1, "loss": 0.69, "implicit_acc": 0.5, "reward_margin": 0.0, "lr": 1e-3, "grad_norm": 2})
        tracker.step({"step": 2, "loss": None, "implicit_acc": None, "reward_margin": None, "lr": 1e-3,
                      "grad_norm": None, "skipped": "non-finite loss"})
    assert calls[0] == ("init", {"project": "agfsync", "name": "sd15-agfsync", "mode": "offline", "dir": str(tmp_path),
                                 "id": "abc", "resume": "allow", "config": {"seed": 1}})
    assert calls[1] == ("log", 1, {"train/loss": 0.69, "train/implicit_accuracy": 0.5, "train/reward_margin": 0.0,
                                   "train/lr": 1e-3, "train/grad_norm": 2.0, "train/pairs_per_s": 2.0,
                                   "train/eta_s": 12.0})
    assert calls[2] == ("log", 2, {"train/lr": 1e-3, "train/pairs_per_s": 2.0, "train/eta_s": 8.0})
    assert calls[3:] == [("finish",)]


def test_train_tracking_purge_step_is_the_restored_step_plus_one(tmp_path, monkeypatch):
    seen = {}

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            seen.update(log_dir=log_dir, purge_step=purge_step)

    import torch.utils.tensorboard

    monkeypatch.setattr(torch.utils.tensorboard, "SummaryWriter", Writer)
    tracking.open_tensorboard(tmp_path / "tb", start=250)
    assert seen == {"log_dir": str(tmp_path / "tb"), "purge_step": 251}


def test_train_tracking_is_operational_no_rerun_no_restart(demo_config_module, tmp_path):
    """Editing train.tracking changes neither rule train_dpo's params (no Snakemake rerun), nor
    the config digest, nor the checkpoints' run identity (a resume goes on, not from step 0);
    the job still gets the section (with_operational)."""
    import copy

    from helpers import settings

    from agfsync.core import dag
    from agfsync.core.config import check_config, config_digest
    from agfsync.train.resume import run_identity

    cfg = check_config(copy.deepcopy(demo_config_module))
    moved = copy.deepcopy(cfg)
    moved["train"]["tracking"] = {"tensorboard": False, "log_every": 1,
                                  "wandb": {"enabled": True, "mode": "online", "project": "p", "name": "n"}}
    assert "tracking" not in dag.stage_params(cfg, "train_dpo", model="sd15")["train"]
    assert dag.stage_params(moved, "train_dpo", model="sd15") == dag.stage_params(cfg, "train_dpo", model="sd15")
    assert config_digest(moved, "sd15") == config_digest(cfg, "sd15")
    (tmp_path / "index.json").write_text("{}")
    before, after = settings(cfg, "train_dpo", model="sd15"), settings(moved, "train_dpo", model="sd15")
    assert after.train.tracking.wandb.project == "p" and before.train.tracking.log_every == 10
    assert run_identity(after, "sd15", 1, tmp_path) == run_identity(before, "sd15", 1, tmp_path)


# ------------------------------------------------------------------ a short tiny run


@pytest.fixture(scope="module")
def sd1_models(tmp_path_factory):
    """Only the tiny SD 1.x model (the session's tiny_models builds every family)."""
    from agfsync.demo.tiny_models import build_all

    out = tmp_path_factory.mktemp("tiny") / "tiny_models"
    build_all(out, families=("sd1",))
    return out


def _events(directory, purge: bool = True) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0}, purge_orphaned_data=purge)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_train_tracking_event_files_equal_metrics_jsonl_across_a_resume(demo_config_module, sd1_models, tmp_path):
    cache = toy_cache(tmp_path / "cache")
    cfg = toy_config(demo_config_module, sd1_models, checkpoint_every=3, tracking={"log_every": 2})
    cfg["models"]["sd15"]["train"].update({"steps": 6, "global_batch": 2})
    first = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt", stop_after=4)  # checkpoint at 3
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 3" in resumed.stderr

    board = tmp_path / "ckpt" / "tensorboard"
    assert len(list(board.glob("events.out.tfevents.*"))) == 2  # one per segment, next to the checkpoints
    assert not (tmp_path / "out" / "tensorboard").exists()  # the shared model folder stays clean
    records = metrics(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    events = _events(board)
    assert set(events) == {*TAGS, "train/pairs_per_s", "train/eta_s"}
    for tag, key in TAGS.items():
        assert [s for s, _ in events[tag]] == [1, 2, 3, 4, 5, 6], tag  # step 4 once: the first segment's is purged
        # float32 in the event file
        assert [v for _, v in events[tag]] == [pytest.approx(r[key], rel=1e-6, abs=1e-12) for r in records], tag
    assert all(v > 0 for _, v in events["train/pairs_per_s"])
    eta = dict(events["train/eta_s"])
    assert eta[6] == 0 and all(eta[s] > 0 for s in (1, 2, 3, 4, 5))  # the final step has nothing left
    # without TensorBoard's purge, step 4 (logged by the stopped segment after its last checkpoint) is there twice
    raw = _events(board, purge=False)
    assert [s for s, _ in raw["train/loss"]] == [1, 2, 3, 4, 4, 5, 6]

    # progress lines every 2 steps, the first step of each segment and the last one
    line = re.compile(r"train: step (\d+)/6 \(\d+%\) loss \d\.\d{4} acc \d\.\d\d margin -?\d+\.\d{3} lr \d\.\de-\d\d "
                      r"\| \d+\.\d pairs/s \| elapsed \d+:\d\d:\d\d, ETA \d+:\d\d:\d\d")
    assert [int(m) for m in line.findall(first.stderr)] == [1, 2, 4]
    assert [int(m) for m in line.findall(resumed.stderr)] == [4, 6]
    print("\n" + "\n".join(x for x in (first.stderr + "\n" + resumed.stderr).splitlines() if "train: step" in x))
    print("events:", {tag: [(s, round(v, 6)) for s, v in values] for tag, values in events.items()})
    print("metrics:", [{k: r[k] for k in ("step", *TAGS.values())} for r in records])
    assert np.isfinite([v for _, v in events["train/loss"]]).all()
