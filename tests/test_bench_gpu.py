"""bench/gpu.sh, the one call that measures everything on a GPU machine (issue 19): its CPU smoke
run (every step end to end on tiny models), step budgets and failures, the carried-wheel install,
the wheel set against what the script imports, and the 64 MiB travel limit."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO

BENCH = REPO / "bench"
# distributions the smoke run imports here that the GPU image does not need: each is imported only
# where installed, or belongs to this machine's newer versions of packages the image has
ENVIRONMENT_ONLY = {
    "xformers",  # agfsync.models.attention uses it where installed; the image has none (SDPA)
    "wcwidth",  # tabulate's optional import
    "httpx2", "httpcore2", "sniffio", "truststore",  # huggingface_hub 2.x here; the image's 1.33 uses httpx
    "setuptools",  # on the image too; imported by torch's cpp_extension here
}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _names(path: Path) -> set[str]:
    return {_normalise(line.split("#")[0].strip()) for line in path.read_text().splitlines()
            if line.split("#")[0].strip()}


def _module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}_t", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _probe_wheel(folder: Path) -> Path:
    """A minimal wheel (distribution agfsync-gpu-probe) standing in for the carried ones."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "agfsync_gpu_probe-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("agfsync_gpu_probe/__init__.py", "VALUE = 19\n")
        whl.writestr("agfsync_gpu_probe-1.0.dist-info/METADATA",
                     "Metadata-Version: 2.1\nName: agfsync-gpu-probe\nVersion: 1.0\n")
        whl.writestr("agfsync_gpu_probe-1.0.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("agfsync_gpu_probe-1.0.dist-info/RECORD", "")
    return path


def _gpu_sh(args: list[str], tmp_path: Path, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHON": sys.executable, "AGFSYNC_WHEELS": str(tmp_path / "no-wheels"), **env}
    return subprocess.run(["bash", str(BENCH / "gpu.sh"), *args], capture_output=True, text=True, timeout=900,
                          env=environ)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One smoke run of every step, with a probe wheel carried the way the GPU run carries .whl/."""
    tmp = tmp_path_factory.mktemp("gpu")
    _probe_wheel(tmp / "wheels")
    out = tmp / "out"
    result = _gpu_sh(["--smoke", "--out", str(out)], tmp, AGFSYNC_WHEELS=str(tmp / "wheels"))
    return result, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text(), out


def test_smoke_run_measures_every_step(smoke):
    result, data, table, _ = smoke
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "gpu.sh: installing 1 wheels" in result.stdout
    assert data["machine"]["carried"] == ["agfsync-gpu-probe"]  # installed into the temporary site
    assert data["order"] == ["kernels", "generation", "dpo", "vqa"]
    assert {name: s["status"] for name, s in data["steps"].items()} == dict.fromkeys(data["order"], "ok")
    kernels = data["steps"]["kernels"]
    assert [(r["arch"], r["layout"], r["silu"]) for r in kernels["group_norm"]] == [
        ("sd15", "nchw", True), ("sd15", "nchw", False), ("sd15", "channels_last", True),
        ("sd15", "channels_last", False)]
    assert kernels["summary"]["sd15/nchw"]["all_checks_pass"] is True
    assert kernels["summary"]["sd15/channels_last"]["all_checks_pass"] is True
    assert max(kernels["self_check_error_ratios"].values()) <= 1.0
    assert kernels["dpo_loss"][0]["loss_abs_error"] < 1e-3
    gen = data["steps"]["generation"]["generation"]
    assert sorted(gen) == ["sd15", "sdxl"]
    for arch, v in gen.items():
        assert v["candidates_per_batch"] == 8 and v["resolution"] == 64 and v["steps"] == 2
        assert v["images_per_s"] > 0
        assert v["fraction_of_ceiling"] == pytest.approx(v["images_per_s"] / v["ceiling_images_per_s"], rel=0.02)
    from agfsync.demo.tiny_models import sd1_unet

    (run,) = data["steps"]["dpo"]["runs"]
    assert run["unet_parameters"] == sum(p.numel() for p in sd1_unet().parameters())
    assert run["seconds_per_pair"] > 0 and run["peak_kind"] == "process max RSS" and "error" not in run
    vqa = data["steps"]["vqa"]
    assert vqa["questions"] == 64 and vqa["fast_questions_per_s"] > 0 and vqa["generate_questions_per_s"] > 0
    assert table.startswith("# bench/gpu.sh --smoke, ")
    for step in data["order"]:
        assert f"| {step} | ok |" in table


def test_the_carried_wheels_are_what_the_script_imports_beyond_the_gpu_image(smoke):
    """Every distribution the steps import is on the GPU image or carried, and every carried wheel
    is imported (bench/gpu_wheels.txt is exactly what is needed)."""
    _, data, _, _ = smoke
    imported = {_normalise(d) for s in data["steps"].values() for d in s["imported_distributions"]}
    image, wheels = _names(BENCH / "gpu_image.txt"), _names(BENCH / "gpu_wheels.txt")
    assert {"torch", "triton", "transformers", "accelerate", "numpy"} <= image
    missing = imported - image - wheels - {"agfsync"} - ENVIRONMENT_ONLY
    assert missing == set(), f"imported by bench/gpu.sh's steps, neither on the GPU image nor carried: {missing}"
    assert wheels - imported == set(), "carried but never imported"
    lock = {_normalise(line.split("==")[0]) for line in (REPO / "requirements.lock").read_text().splitlines()
            if "==" in line and not line.startswith("#")}
    assert wheels <= lock  # versions come from the lock


def test_a_step_over_its_budget_is_stopped_and_the_next_still_runs(tmp_path):
    out = tmp_path / "out"
    result = _gpu_sh(["--smoke", "--out", str(out), "--only", "generation", "vqa", "--budget", "generation=1"],
                     tmp_path)
    assert result.returncode == 1
    assert "gpu.sh: no wheels in" in result.stdout
    data = json.loads((out / "gpu.json").read_text())
    assert data["steps"]["generation"]["status"] == "timeout"
    assert data["steps"]["generation"]["budget_s"] == 1.0
    assert data["steps"]["vqa"]["status"] == "ok" and data["steps"]["vqa"]["questions"] == 64
    table = (out / "gpu.md").read_text()
    assert "| generation | timeout |" in table and "| vqa | ok |" in table


def test_a_failing_step_keeps_its_error_and_the_others_their_numbers(tmp_path):
    broken = tmp_path / "broken"
    (broken / "diffusers").mkdir(parents=True)
    (broken / "diffusers" / "__init__.py").write_text("raise ImportError('diffusers broken on purpose by the test')\n")
    out = tmp_path / "out"
    result = _gpu_sh(["--smoke", "--out", str(out), "--only", "dpo", "vqa"], tmp_path, PYTHONPATH=str(broken))
    assert result.returncode == 1
    data = json.loads((out / "gpu.json").read_text())
    dpo = data["steps"]["dpo"]
    assert dpo["status"] == "failed" and dpo["returncode"] == 1
    assert "ImportError: diffusers broken on purpose by the test" in dpo["error"]
    assert data["steps"]["vqa"]["status"] == "ok"
    assert "| dpo | failed |" in (out / "gpu.md").read_text()
    assert "diffusers broken on purpose by the test" in (out / "gpu.md").read_text()


def test_bad_budget_is_named(tmp_path):
    result = subprocess.run([sys.executable, str(BENCH / "gpu.py"), "--smoke", "--out", str(tmp_path),
                             "--budget", "training=5"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "--budget training=5: unknown step 'training' (expected one of kernels, generation, dpo, vqa)" in result.stderr


def _check_size(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(BENCH / "gpu_wheels.sh"), "--check-only", str(folder)], capture_output=True,
                          text=True, env={**os.environ, "PYTHON": sys.executable})


def test_wheel_size_check_counts_the_repository_and_fails_over_64_mib(tmp_path):
    small = tmp_path / "small"
    _probe_wheel(small)
    ok = _check_size(small)
    assert ok.returncode == 0, ok.stderr
    assert re.search(r"gpu_wheels.sh: 1 wheels 0\.0 MiB \+ repository \d+\.\d MiB = \d+\.\d MiB \(limit 64 MiB\)",
                     ok.stdout), ok.stdout
    repo_mib = float(re.search(r"repository (\d+\.\d) MiB", ok.stdout).group(1))
    big = tmp_path / "big"
    big.mkdir()
    with open(big / "big-1.0-py3-none-any.whl", "wb") as f:  # sparse: 64 MiB less half the repository
        f.truncate(int((64 - repo_mib / 2) * 2**20))
    over = _check_size(big)
    assert over.returncode == 1
    assert "is over the 64 MiB that may travel to the GPU machine" in over.stderr


# ------------------------------------------------------------------ real architectures and their FLOPs

@pytest.mark.parametrize("part, params", [("vae", 83_653_863), ("clip_l", 123_060_480), ("clip_bigg", 694_659_840)])
def test_pipeline_components_have_the_published_parameter_counts(part, params):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from agfsync.demo.tiny_models import build_clip_tokenizer

    arch = _module("architectures")
    tokenizer = build_clip_tokenizer()
    with init_empty_weights():
        model = {"vae": lambda: AutoencoderKL(**arch.VAE),
                 "clip_l": lambda: CLIPTextModel(arch._text_config(arch.CLIP_L_TEXT, tokenizer)),
                 "clip_bigg": lambda: CLIPTextModelWithProjection(arch._text_config(arch.CLIP_BIGG_TEXT, tokenizer)),
                 }[part]()
    assert sum(p.numel() for p in model.parameters()) == params


def test_blip2_xxl_is_the_published_architecture_on_the_meta_device():
    """EVA ViT-g 985,952,256 and Q-Former 105,137,664 parameters, 32 queries; flan-t5-xxl as
    transformers 5 builds it from its config (shared, encoder and decoder token embeddings are three
    32,128 x 4,096 tensors there: 11,398,524,928; 11,135,332,352 with the two input copies tied)."""
    import torch
    from transformers import Blip2Processor, BlipImageProcessor

    from agfsync.demo.tiny_models import build_t5_tokenizer

    arch = _module("architectures")
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 224, "width": 224}),
                               tokenizer=build_t5_tokenizer(), num_query_tokens=32)
    model = arch.build_blip2_xxl(processor, device="meta", dtype=torch.bfloat16)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(model.vision_model) == 985_952_256
    assert count(model.qformer) == 105_137_664
    assert count(model.language_model) == 11_398_524_928
    assert tuple(model.query_tokens.shape) == (1, 32, 768)
    assert model.dtype == torch.bfloat16


@pytest.mark.parametrize("name, unet_tflop, vae_tflop", [("sd15", 0.8033, 2.5145), ("sdxl", 6.7612, 10.4704)])
def test_generation_ceiling_counts_unet_and_vae_flops_of_the_real_architectures(name, unet_tflop, vae_tflop):
    """The FLOPs behind the ceiling of docs/method.md, counted on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL

    arch, steps = _module("architectures"), _module("gpu_steps")
    latent = arch.RESOLUTION[name] // 8
    assert steps._unet_flops(arch.build_unet(name, empty=True), latent) / 1e12 == pytest.approx(unet_tflop, abs=1e-4)
    with init_empty_weights():
        vae = AutoencoderKL(**arch.VAE)
    assert steps._vae_decode_flops(vae, latent) / 1e12 == pytest.approx(vae_tflop, abs=1e-4)


def test_blip2_materialised_from_the_meta_device_is_finite_and_answers():
    """The GPU run's materialisation (to_empty, drawn weights, kept buffers), on a scaled-down config
    on the CPU: every weight finite, norms 1, query tokens drawn, and our fast VQA path answers with it."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import Blip2Processor, BlipImageProcessor

    from agfsync.demo.tiny_models import build_t5_tokenizer
    from agfsync.models.vqa import VQAScorer

    arch = _module("architectures")
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 28, "width": 28}),
                               tokenizer=build_t5_tokenizer(), num_query_tokens=4)
    small = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    config = arch.blip2_xxl_config(
        processor, vision={**small, "image_size": 28}, qformer={**small, "encoder_hidden_size": 32},
        text=dict(d_model=32, d_ff=48, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2))
    model = arch.build_blip2_xxl(processor, device="cpu", dtype=torch.float32, config=config)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert float(model.language_model.encoder.final_layer_norm.weight.min()) == 1.0
    assert float(model.query_tokens.std()) == pytest.approx(0.02, rel=0.5)
    images = [Image.fromarray(np.full((28, 28, 3), 40 * i, dtype=np.uint8)) for i in range(3)]
    qa = [{"question": "is there a circle?", "choices": ["yes", "no"], "answer": "yes"}]
    answers = VQAScorer(model, processor, torch.device("cpu"), method="fast").answer(images, qa)
    assert [len(row) for row in answers] == [1, 1, 1] and {a for row in answers for a in row} <= {"yes", "no"}


@pytest.mark.slow
def test_gpu_probe_smoke_compares_three_group_norm_paths(tmp_path):
    """bench/gpu_probe.py's gn part on the CPU (interpreter, tiny shapes): every row has eager,
    chunked and one-program-per-group results, and both kernel paths agree with eager within bf16."""
    out = tmp_path / "probe"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_probe.py"), "--smoke", "--only", "gn",
                             "--out", str(out), "--budget-s", "240"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "probe.json").read_text())
    assert data["smoke"] is True and data["gn"]["status"] == "ok"
    rows = data["gn"]["gn_rows"]
    assert [r["shape"] for r in rows] == [[2, 64, 4, 4], [2, 320, 3, 5]]
    for row in rows:
        assert row["eager"]["max_abs_diff_vs_eager"] == 0.0
        for path in ("chunked", "small"):
            assert row[path]["host_fwd_ms"] > 0 and row[path]["device_fwd_ms"] is None  # no GPU time on a CPU
            assert row[path]["max_abs_diff_vs_eager"] <= 2.0**-4  # bf16 outputs of values up to ~4


@pytest.mark.slow
def test_gpu_probe_smoke_profiles_a_dpo_step_with_python_stacks(tmp_path):
    """bench/gpu_probe.py's dpo part on the CPU (tiny SD 1.x): the torch mode's timed steps and its
    profiled step, with the Python frames behind the host time (--stacks)."""
    out = tmp_path / "probe"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_probe.py"), "--smoke", "--only", "dpo",
                             "--stacks", "--out", str(out), "--budget-s", "70"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "probe.json").read_text())["dpo"]["dpo_runs"][0]
    assert run["mode"] == "torch" and len(run["step_s"]) == 2 and run["median_s_per_pair"] > 0
    assert run["profiled_step"]["wall_s"] > 0 and run["profiled_step"]["top_cpu_ops_self_ms"]
    frames = [f for row in run["top_cpu_stacks"] for f in row["stack"]]
    assert any("torch/nn/modules" in f for f in frames), frames[:10]
