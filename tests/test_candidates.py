"""Candidate generation: determinism, seeds independent of shard layout, noise statistics,
one UNet batch per prompt, attention backend selection, atomic shards."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from helpers import settings

from agfsync.core.io import DataError
from agfsync.core.shards import Shard
from agfsync.stages import candidates
from agfsync.stages.candidates import CandidateGenerator, candidate_seeds, perturb

RECORDS = [{"id": f"animals-{i:010d}", "category": "Animals", "prompt": p} for i, p in enumerate(
    ["a red fox in snow", "three ducklings on a pond", "a tabby cat on a windowsill", "a whale beside a boat",
     "two giraffes under a tree", "a heron in a lagoon"])]


@pytest.fixture
def cfg(demo_config, tiny_models):
    cfg = copy.deepcopy(demo_config)
    cfg["models"]["sd15"]["pretrained"] = str(tiny_models / "sd1")
    cfg["models"]["sdxl"]["pretrained"] = str(tiny_models / "sdxl")
    cfg["candidates"].update({"num_per_prompt": 4, "prompts_per_batch": 2, "attention": "sdpa"})
    return cfg


def generate_shard(cfg: dict, model: str, records, out, **kwargs) -> dict:
    return candidates.generate_shard(settings(cfg, "candidates_generate", model=model), model, records, out, **kwargs)


def generator(cfg: dict, model: str) -> CandidateGenerator:
    s = settings(cfg)
    return CandidateGenerator.from_settings(model, s.models[model], s.candidates, seed=s.seed, device="cpu")


def images_of(path) -> dict:
    with Shard(path) as shard:
        return {(r["prompt_id"], r["candidate"]): np.asarray(shard.image(r)) for r in shard.rows}


@pytest.mark.parametrize("model", ["sd15", "sdxl"])
def test_rerun_reproduces_every_image(cfg, model, tmp_path):
    generate_shard(cfg, model, RECORDS[:2], tmp_path / "a.tar", progress=False)
    generate_shard(cfg, model, RECORDS[:2], tmp_path / "b.tar", progress=False)
    a, b = images_of(tmp_path / "a.tar"), images_of(tmp_path / "b.tar")
    assert a.keys() == b.keys() and len(a) == 8
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()  # byte-identical shards
    assert not np.array_equal(a[(RECORDS[0]["id"], 0)], a[(RECORDS[0]["id"], 1)])  # candidates differ


def test_images_do_not_depend_on_shard_or_neighbours(cfg, tmp_path):
    """The same prompt in shard 0 (first) and shard 5 (last, other neighbours) gives the same images,
    with one prompt per UNet batch (identical batch composition, so the numerics are identical)."""
    cfg["candidates"]["prompts_per_batch"] = 1
    target = RECORDS[0]
    generate_shard(cfg, "sd15", [target, RECORDS[1]], tmp_path / "shard-00000.tar", progress=False)
    generate_shard(cfg, "sd15", [RECORDS[4], RECORDS[5], target], tmp_path / "shard-00005.tar", progress=False)
    a, b = images_of(tmp_path / "shard-00000.tar"), images_of(tmp_path / "shard-00005.tar")
    for k in range(4):
        assert np.array_equal(a[(target["id"], k)], b[(target["id"], k)])


def test_seeds_come_from_prompt_and_candidate():
    s = candidate_seeds(200, "animals-0000000000", 3)
    assert s == candidate_seeds(200, "animals-0000000000", 3)
    assert len({s.latent, s.noise, s.sampler}) == 3
    assert candidate_seeds(200, "animals-0000000001", 3).latent != s.latent
    # The authors' bug, behind a flag: every prompt shares the latents of candidate k.
    shared = [candidate_seeds(200, pid, 3, shared_latents=True).latent for pid in ("a", "b")]
    assert shared[0] == shared[1]


def test_perturbation_has_the_configured_sigma():
    embeds = torch.randn(77, 768)
    for sigma in (0.1, 0.5):
        diff = perturb(embeds, sigma, seed=123, clean=False) - embeds
        assert float(diff.std()) == pytest.approx(sigma, rel=0.02)
        assert abs(float(diff.mean())) < 0.01 * sigma * 10
    assert torch.equal(perturb(embeds, 0.1, seed=123, clean=True), embeds)
    assert torch.equal(perturb(embeds, 0.1, 5, False), perturb(embeds, 0.1, 5, False))


def capture_pipeline_calls(generator: CandidateGenerator) -> list[dict]:
    calls = []
    original = generator.pipe.__class__.__call__

    def spy(pipe, *args, **kwargs):
        calls.append(kwargs)
        return original(pipe, *args, **kwargs)

    generator.pipe.__class__ = type("Spy", (generator.pipe.__class__,), {"__call__": spy})
    return calls


@pytest.mark.parametrize("pooled_noise, pooled_sigma", [("sigma", 0.1), ("none", 0.0), ("unit", 1.0)])
def test_sdxl_noise_in_one_batch_per_prompt(cfg, pooled_noise, pooled_sigma):
    cfg["candidates"].update({"num_per_prompt": 8, "prompts_per_batch": 1, "pooled_noise": pooled_noise,
                              "clean_first": True})
    gen = generator(cfg, "sdxl")
    calls = capture_pipeline_calls(gen)
    cond, _, pooled, _ = gen.encode([RECORDS[0]["prompt"]])
    rows, images, latents = gen.generate(RECORDS[:1])
    assert len(calls) == 1  # all 8 candidates in one pipeline call (one UNet batch per step)
    kwargs = calls[0]
    assert kwargs["prompt_embeds"].shape == (8, 77, 64) and kwargs["latents"].shape == (8, 4, 8, 8)
    token_diff = kwargs["prompt_embeds"] - cond
    assert torch.equal(token_diff[0], torch.zeros_like(token_diff[0]))  # clean_first: candidate 0 noise-free
    assert float(token_diff[1:].std()) == pytest.approx(0.1, rel=0.05)
    pooled_diff = kwargs["pooled_prompt_embeds"] - pooled
    if pooled_noise == "unit":  # the authors' script: every pooled embedding noised, candidate 0's too
        assert float(pooled_diff.std()) == pytest.approx(1.0, rel=0.25)
        assert float(pooled_diff[0].abs().max()) > 0.5
    else:
        assert float(pooled_diff[0].abs().max()) == 0.0
        assert float(pooled_diff[1:].std()) == pytest.approx(pooled_sigma, rel=0.25, abs=1e-9)
    assert [r["clean"] for r in rows] == [True] + [False] * 7
    assert images.shape == (8, 64, 64, 3) and images.dtype == np.uint8 and latents.shape == (8, 4, 8, 8)


def test_manifest_rows_carry_the_settings(cfg, tmp_path):
    generate_shard(cfg, "sd15", RECORDS[:1], tmp_path / "s.tar", progress=False)
    with Shard(tmp_path / "s.tar") as shard:
        row = shard.rows[0]
        assert shard.latent(row).shape == (4, 8, 8) and shard.latent(row).dtype == np.float16
    seeds = candidate_seeds(cfg["seed"], RECORDS[0]["id"], 0)
    assert {k: row[k] for k in ("prompt_id", "candidate", "seed", "noise_seed", "model", "scheduler", "steps",
                                "guidance_scale", "sigma", "clean", "width", "image")} == {
        "prompt_id": RECORDS[0]["id"], "candidate": 0, "seed": seeds.latent, "noise_seed": seeds.noise,
        "model": "sd15", "scheduler": "EulerDiscreteScheduler", "steps": 4, "guidance_scale": 5.0, "sigma": 0.1,
        "clean": False, "width": 64, "image": f"images/{RECORDS[0]['id']}.0.png"}
    assert row["cpu_threads"] == torch.get_num_threads()  # recorded: CPU results depend on it


def test_crash_mid_shard_leaves_no_file_and_rerun_completes(cfg, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = candidates.CandidateGenerator.generate

    def crash_on_second_batch(self, records):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("simulated crash (node preempted)")
        return original(self, records)

    monkeypatch.setattr(candidates.CandidateGenerator, "generate", crash_on_second_batch)
    out = tmp_path / "shard-00000.tar"
    with pytest.raises(RuntimeError, match="simulated crash"):
        generate_shard(cfg, "sd15", RECORDS[:4], out, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing partial left behind
    monkeypatch.setattr(candidates.CandidateGenerator, "generate", original)
    generate_shard(cfg, "sd15", RECORDS[:4], out, progress=False)
    assert len(Shard(out).rows) == 16


def test_empty_shard_is_valid(cfg, tmp_path):
    summary = generate_shard(cfg, "sd15", [], tmp_path / "e.tar", progress=False)
    assert summary["images"] == 0 and Shard(tmp_path / "e.tar").rows == []


def test_bad_shards_name_the_shard_and_record(cfg, tmp_path):
    path = tmp_path / "s.tar"
    generate_shard(cfg, "sd15", RECORDS[:1], path, progress=False)
    with pytest.raises(DataError, match=r"shard .*missing.tar: file missing"):
        Shard(tmp_path / "missing.tar")
    data = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"shard .*cut.tar: not a readable tar file \(unexpected end of data\); "
                                        r"delete it and regenerate"):
        Shard(tmp_path / "cut.tar")
    # A corrupt PNG inside an intact tar.
    from agfsync.core.shards import write_shard

    with Shard(path) as shard:
        rows = shard.rows
    write_shard(tmp_path / "bad.tar", rows[:1], [(rows[0]["image"], b"\x89PNG\r\n\x1a\nnot really a png")])
    with pytest.raises(DataError, match=r"shard .*bad.tar, record animals-0000000000.0: image images/animals-0000000000.0.png is corrupt"):
        Shard(tmp_path / "bad.tar").image(rows[0])
    (tmp_path / "notar.tar").write_text("hello")
    with pytest.raises(DataError, match="not a readable tar file"):
        Shard(tmp_path / "notar.tar")


def test_attention_backends(cfg, caplog):
    from agfsync.models.attention import configure_attention

    gen = generator(cfg, "sd15")
    with pytest.raises(RuntimeError, match=r"attention backend 'xformers' was requested \(candidates.attention\) but "
                                           r"cannot run here: device is cpu, and xformers has no CPU kernels"):
        configure_attention(gen.pipe, "xformers", torch.device("cpu"))
    with caplog.at_level("INFO"):
        assert configure_attention(gen.pipe, "auto", torch.device("cpu")) == "sdpa"
    assert "attention: auto chose sdpa because device is cpu" in caplog.text
    processors = {type(p).__name__ for p in gen.pipe.unet.attn_processors.values()}
    assert processors == {"AttnProcessor2_0"}
