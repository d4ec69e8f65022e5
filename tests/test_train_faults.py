"""The trainer under faults: malicious or truncated checkpoints, torn metrics, a crash after
the final checkpoint, non-finite losses. The runs are one trainer process in this pytest
process (train_helpers.train_in_process: the trainer's main, gloo world of one, on the CPU)."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from train_helpers import metrics, toy_cache, toy_config, train_in_process, unet_weights

slow = pytest.mark.slow  # DeepSpeed on the CPU: seconds to tens of seconds per test


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return toy_cache(tmp_path_factory.mktemp("toy") / "cache")


# a valid beta_dpo whose 0.5 * beta overflows fp32 in the loss: a NaN loss while policy == reference
OVERFLOW = 1e308


def short(demo_config, tiny_models, steps: int, **train) -> dict:
    cfg = toy_config(demo_config, tiny_models, **train)
    cfg["models"]["sd15"]["train"]["steps"] = steps
    return cfg


class _Payload:
    """Unpickling this calls os.system: the marker file exists if (and only if) it ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@slow
def test_a_malicious_checkpoint_file_is_refused_and_runs_nothing(demo_config_module, tiny_models, cache, tmp_path):
    cfg = short(demo_config_module, tiny_models, 6)
    first = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt", stop_after=5)
    assert first.returncode == 0, first.stderr[-3000:]
    # a crafted file with a valid manifest: the digest only proves the file is the one saved,
    # not that it is harmless, so the loader itself must refuse it
    tag = tmp_path / "ckpt" / "step000005"
    marker = tmp_path / "pwned"
    bad = tag / "mp_rank_00_model_states.pt"
    from agfsync.train.checkpoints import safe_load

    state = safe_load(bad, map_location="cpu")  # a real save loads safely (allow-listed types only)
    torch.save({**state, "evil": _Payload(marker)}, bad)
    manifest = json.loads((tag / "COMPLETE.json").read_text())
    from agfsync.core.io import sha256_file

    manifest["files"]["mp_rank_00_model_states.pt"] = {"bytes": bad.stat().st_size, "sha256": sha256_file(bad)}
    (tag / "COMPLETE.json").write_text(json.dumps(manifest))
    resumed = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert resumed.returncode == 2  # main reports the error and exits with 2
    assert not marker.exists()
    assert f"{bad}: refusing to load a checkpoint file that holds objects other than tensors" in resumed.stderr
    assert not (tmp_path / "out").exists()


@slow
def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one(demo_config_module, tiny_models, cache,
                                                                       tmp_path):
    cfg = short(demo_config_module, tiny_models, 4, checkpoint_every=1, keep_checkpoints=3)
    reference = train_in_process(cfg, cache, tmp_path / "ref", tmp_path / "ref_ckpt")
    assert reference.returncode == 0, reference.stderr[-3000:]
    first = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt", stop_after=3)
    assert first.returncode == 0, first.stderr[-3000:]
    bad = tmp_path / "ckpt" / "step000003" / "mp_rank_00_model_states.pt"
    size = bad.stat().st_size
    with open(bad, "r+b") as handle:
        handle.truncate(size // 2)
    # an interrupted save of a later step: files but no manifest
    (tmp_path / "ckpt" / "step000004").mkdir()
    (tmp_path / "ckpt" / "step000004" / "mp_rank_00_model_states.pt").write_bytes(b"partial")
    resumed = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (f"not resuming from checkpoint {tmp_path / 'ckpt' / 'step000004'}: "
            f"{tmp_path / 'ckpt' / 'step000004' / 'COMPLETE.json'} is missing (an interrupted save)") in resumed.stderr
    assert (f"not resuming from checkpoint {tmp_path / 'ckpt' / 'step000003'}: {bad} has {size // 2} bytes, "
            f"the manifest says {size} (truncated or changed)") in resumed.stderr
    assert "at step 2" in resumed.stderr
    a, b = unet_weights(tmp_path / "ref"), unet_weights(tmp_path / "out")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["step"] for m in metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("step*")) == ["step000002", "step000003", "step000004"]
    # the rejected ones are kept aside, never deleted (evidence, or the only copy of a long run)
    assert sorted(p.name for p in (tmp_path / "ckpt" / "rejected").iterdir()) == ["step000003", "step000004"]
    assert f"moved checkpoint {tmp_path / 'ckpt' / 'step000004'} aside to " in resumed.stderr


@slow
def test_a_torn_metrics_line_and_a_crash_after_the_final_checkpoint(demo_config_module, tiny_models, cache, tmp_path):
    """Item 6 and 13: a torn tail in metrics.jsonl, then a resume; then the outputs lost after
    the final checkpoint: the rerun writes the same final metrics and the summed time."""
    cfg = short(demo_config_module, tiny_models, 4, checkpoint_every=2)
    first = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt", stop_after=3)
    assert first.returncode == 0, first.stderr[-3000:]
    path = tmp_path / "ckpt" / "metrics.jsonl"
    with open(path, "ab") as handle:
        handle.write(b'{"step": 4, "loss": 0.6')  # a crash in the middle of an append
    second = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "skipping a torn last line" in second.stderr
    assert [m["step"] for m in metrics(path)] == [1, 2, 3, 4]
    assert [m["step"] for m in metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3, 4]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the run "dies" after its final checkpoint, before the outputs: they are gone
    import shutil

    shutil.rmtree(tmp_path / "out")
    third = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "at step 4" in third.stderr
    again = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert again["final"] == summary["final"] and again["final"]["step"] == 4
    assert again["resumed_from_step"] == 4
    # the time of both earlier segments (up to step 4's checkpoint) is kept, not only this one's
    assert again["wall_seconds"] >= sum(m["seconds"] for m in metrics(path)) > 0
    a, b = unet_weights(tmp_path / "out"), unet_weights(tmp_path / "out")
    assert a.keys() == b.keys()


@slow
def test_a_nan_loss_stops_the_run_and_saves_no_model(demo_config_module, tiny_models, cache, tmp_path):
    cfg = short(demo_config_module, tiny_models, 6, checkpoint_every=1)
    # neither the config nor the typed settings take a NaN; an overflow makes one: 0.5 * beta is inf in fp32, and
    # at step 1 the policy equals the reference, so inf * 0 (the reward difference) is NaN
    cfg["models"]["sd15"]["train"]["beta_dpo"] = OVERFLOW
    result = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert result.returncode == 2  # main reports the error and exits with 2
    assert ("step 1: loss is nan (micro-batch 0; models.sd15.train.beta_dpo is 1e+308, lr 0.001); 0 non-finite "
            "step(s) skipped before, train.max_nonfinite_steps is 0: stopping; no model saved; no checkpoint kept"
            ) in result.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "ckpt" / "metrics.jsonl").exists() and not list((tmp_path / "ckpt").glob("step*"))


def test_weights_an_update_made_non_finite_are_never_saved(tmp_path):
    """The loss and gradient checks run before the update; an overflow in the optimizer itself
    is caught by the weights check that runs before every checkpoint and the final model."""
    from types import SimpleNamespace

    from agfsync.train.trainer import DPOTrainer, NonFiniteError

    trainer = DPOTrainer.__new__(DPOTrainer)  # the check alone, on a stand-in engine
    module = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    trainer.engine, trainer.world, trainer.model_name = SimpleNamespace(module=module), 1, "sd15"
    trainer.hp, trainer.train = SimpleNamespace(lr=1e-6), SimpleNamespace(max_nonfinite_steps=0)
    trainer.nonfinite_steps, trainer.last_checkpoint, trainer.checkpoints = 0, 4, tmp_path
    trainer._check_weights(5)  # finite: nothing happens
    with torch.no_grad():
        module[1].bias[0] = float("inf")
    with pytest.raises(NonFiniteError) as err:
        trainer._check_weights(5)
    assert str(err.value) == (
        "step 5: the update left a non-finite value in parameter 1.bias (models.sd15.train.lr 1e-06 too high, or "
        "train.grad_clip off?); nothing of this step is saved; 0 non-finite step(s) skipped before, "
        f"train.max_nonfinite_steps is 0: stopping; no model saved; checkpoints up to step 4 kept in {tmp_path}")


@slow
def test_nan_steps_are_skipped_up_to_the_limit_without_moving_the_weights(demo_config_module, tiny_models, cache,
                                                                           tmp_path):
    cfg = short(demo_config_module, tiny_models, 6, checkpoint_every=1, keep_checkpoints=5, max_nonfinite_steps=2)
    cfg["models"]["sd15"]["train"]["beta_dpo"] = OVERFLOW  # NaN while the weights do not move (see above)
    result = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert result.returncode == 2  # main reports the error and exits with 2
    assert "step 2/6 skipped: non-finite loss (2 of at most 2, train.max_nonfinite_steps)" in result.stderr
    assert ("step 3: loss is nan (micro-batch 0; models.sd15.train.beta_dpo is 1e+308, lr 0.001); 2 non-finite "
            "step(s) skipped before, train.max_nonfinite_steps is 2: stopping; no model saved; checkpoints up to "
            f"step 2 kept in {tmp_path / 'ckpt'}") in result.stderr
    assert not (tmp_path / "out").exists()
    steps = metrics(tmp_path / "ckpt" / "metrics.jsonl")
    assert [(m["step"], m["loss"], m["skipped"]) for m in steps] == [(1, None, "non-finite loss"),
                                                                      (2, None, "non-finite loss")]
    # the skipped steps did not move the weights
    from safetensors.torch import load_file

    base = load_file(str(tiny_models / "sd1" / "unet" / "diffusion_pytorch_model.safetensors"))
    from agfsync.train.checkpoints import safe_load

    saved = safe_load(tmp_path / "ckpt" / "step000002" / "mp_rank_00_model_states.pt", map_location="cpu")["module"]
    assert base.keys() == saved.keys() and all(torch.equal(base[k], saved[k]) for k in base)


def test_the_malicious_payload_really_runs_under_a_plain_unpickler(tmp_path):
    """The test above is meaningful: the crafted object does run code when unpickled unsafely."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


@slow
@pytest.mark.parametrize("stage", [0, 3])
def test_resume_loads_every_zero_stage_through_the_safe_loader(stage, demo_config_module, tiny_models, cache,
                                                               tmp_path):
    """The allow-listed types cover what ZeRO 0 and 3 write too (ZeRO 2 is resumed above)."""
    cfg = short(demo_config_module, tiny_models, 3, checkpoint_every=2, zero_stage=stage, optimizer="adamw")
    first = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt", stop_after=2)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = train_in_process(cfg, cache, tmp_path / "out", tmp_path / "ckpt")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2" in resumed.stderr
    assert [m["step"] for m in metrics(tmp_path / "out" / "metrics.jsonl")] == [1, 2, 3]


# ---------------------------------------------------------------------------------- fast: agfsync.train.checkpoints alone

def _fake_checkpoint(root, step: int, payload: bytes = b"weights") -> None:
    from agfsync.train import checkpoints as ckpt

    tag = root / ckpt.tag_name(step)
    (tag / "zero").mkdir(parents=True)
    (tag / "mp_rank_00_model_states.pt").write_bytes(payload)
    (tag / "zero" / "optim.pt").write_bytes(payload * 2)
    ckpt.write_manifest(root, step, {"last": {"step": step, "loss": 0.5}, "wall_seconds": 1.5})


def test_safe_load_refuses_a_pickled_callable_naming_the_file(tmp_path):
    from agfsync.train.checkpoints import CheckpointError, safe_load

    marker, path = tmp_path / "ran", tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.ones(2)}, "evil": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        safe_load(path)
    assert str(err.value).startswith(f"{path}: refusing to load a checkpoint file that holds objects other than "
                                     "tensors and plain values (it could run code): ")
    assert not marker.exists()
    torch.save({"module": {"w": torch.ones(2)}, "step": 3}, path)
    assert safe_load(path)["step"] == 3


def test_choose_skips_truncated_unfinished_and_changed_checkpoints(tmp_path, caplog):
    from agfsync.train import checkpoints as ckpt

    for step in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path, step)
    assert (tmp_path / "latest").read_text() == "step000008"
    (tmp_path / "step000008" / "COMPLETE.json").unlink()  # interrupted before the manifest
    with open(tmp_path / "step000006" / "zero" / "optim.pt", "r+b") as handle:
        handle.truncate(3)
    (tmp_path / "step000004" / "mp_rank_00_model_states.pt").write_bytes(b"WEIGHTS")  # same size, other bytes
    caplog.set_level("WARNING", logger="agfsync.train.checkpoints")
    tag, manifest = ckpt.choose(tmp_path)
    assert (tag, manifest["step"], manifest["last"], manifest["wall_seconds"]) == (
        "step000002", 2, {"step": 2, "loss": 0.5}, 1.5)
    assert [r.getMessage() for r in caplog.records] == [
        f"train: not resuming from checkpoint {tmp_path / 'step000008'}: {tmp_path / 'step000008' / 'COMPLETE.json'} "
        "is missing (an interrupted save); trying the previous one",
        f"train: not resuming from checkpoint {tmp_path / 'step000006'}: {tmp_path / 'step000006' / 'zero' / 'optim.pt'}"
        " has 3 bytes, the manifest says 14 (truncated or changed); trying the previous one",
        f"train: not resuming from checkpoint {tmp_path / 'step000004'}: "
        f"{tmp_path / 'step000004' / 'mp_rank_00_model_states.pt'} does not match its sha256 in the manifest "
        "(corrupted or changed); trying the previous one"]
    (tmp_path / "step000002" / "zero" / "optim.pt").unlink()
    assert ckpt.choose(tmp_path) is None


def test_prune_keeps_the_newest_and_never_the_verified_one(tmp_path):
    from agfsync.train import checkpoints as ckpt

    for step in (5, 10, 15, 100):
        _fake_checkpoint(tmp_path, step)
    ckpt.prune(tmp_path, 2, "step000100")
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step000015", "step000100"]  # by step, not by name
    ckpt.prune(tmp_path, 1, "step000015")
    assert sorted(p.name for p in tmp_path.glob("step*")) == ["step000015", "step000100"]


def test_checkpoints_of_an_earlier_version_are_adopted_not_deleted(tmp_path, caplog):
    """Written before manifests existed: the tag `latest` names is checked file by file
    (weights only) and adopted; one holding a pickled payload is set aside and runs nothing."""
    from agfsync.train import checkpoints as ckpt

    for step in (2, 4):
        tag = tmp_path / ckpt.tag_name(step)
        tag.mkdir()
        torch.save({"module": {"w": torch.full((2,), float(step))}}, tag / "mp_rank_00_model_states.pt")
    (tmp_path / "latest").write_text("step000004")
    assert ckpt.choose(tmp_path) is None  # no manifest: not resumable as it is
    assert ckpt.adopt_legacy(tmp_path) == "step000004"
    tag, manifest = ckpt.choose(tmp_path)
    assert (tag, manifest["step"], manifest["legacy"]) == ("step000004", 4, True)
    assert "adopting checkpoint " + str(tmp_path / "step000004") in caplog.text
    assert ckpt.adopt_legacy(tmp_path) is None  # once there is a manifest, nothing is legacy

    other = tmp_path / "planted"
    tag = other / "step000006"
    tag.mkdir(parents=True)
    marker = tmp_path / "ran"
    torch.save({"module": {}, "evil": _Payload(marker)}, tag / "mp_rank_00_model_states.pt")
    (other / "latest").write_text("step000006")
    assert ckpt.adopt_legacy(other) is None
    assert not marker.exists() and not tag.exists() and (other / "rejected" / "step000006").is_dir()
    assert f"moved checkpoint {tag} aside to {other / 'rejected' / 'step000006'}" in caplog.text
