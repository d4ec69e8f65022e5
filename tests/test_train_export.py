"""What a finished training leaves for sharing (agfsync.train.export): the LoRA adapters in
diffusers' format, which the base pipeline's `load_lora_weights` turns into exactly the
fused UNet we save; an fp16 copy loadable as diffusers' "fp16" variant; a model card."""

from __future__ import annotations

import copy

import pytest
import torch

from agfsync.core.sections import ModelSettings
from agfsync.train import export
from agfsync.train.build import build_lora

SUMMARY = {"model": "sd15", "steps": 12, "global_batch": 4, "loss": "dpo", "noise": "shared", "optimizer": "adamw",
           "zero_stage": 2, "lora_rank": 4, "final": {"loss": 0.6012, "implicit_acc": 0.75},
           "config_hash": "a749be19d256361a"}


@pytest.fixture
def trained(demo_config, tiny_models):
    """The tiny SD1 UNet with LoRA adapters moved off their start, as a LoRA run ends."""
    from diffusers import UNet2DConditionModel

    from agfsync.core.sections import Settings

    settings = Settings.from_dict({**demo_config, "train": {**demo_config["train"], "zero_stage": 2}})
    unet = UNet2DConditionModel.from_pretrained(tiny_models / "sd1" / "unet")
    build_lora(unet, 4, settings.train, seed=200, model_name="sd15")
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.add_(0.02 * torch.randn_like(p))  # peft starts lora_B at 0: give the adapters an effect
    model = ModelSettings.from_dict({**demo_config["models"]["sd15"], "pretrained": str(tiny_models / "sd1")})
    return unet, model


def test_lora_adapters_load_onto_the_base_pipeline_as_the_fused_unet_and_fp16_is_a_variant(trained, tmp_path):
    from diffusers import UNet2DConditionModel

    from agfsync.models.loaders import load_sd_pipeline

    unet, model = trained
    adapter = export.adapter_state(unet)
    assert adapter and all("lora" in k for k in adapter)
    unet.fuse_lora()
    unet.unload_lora()
    fused = {k: v.clone() for k, v in unet.state_dict().items()}
    unet.save_pretrained(tmp_path / "unet", safe_serialization=True)  # what the trainer writes first
    export.write_extras(tmp_path, SUMMARY, copy.deepcopy(unet), adapter, model, pairs=336)

    pipe = load_sd_pipeline(model.pretrained, model.family, device="cpu")
    pipe.load_lora_weights(str(tmp_path / "lora"))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    loaded = pipe.unet.state_dict()
    assert loaded.keys() == fused.keys()
    moved = [k for k in fused if any(t in k for t in ("to_q", "to_k", "to_v", "to_out"))]
    for k in fused:
        assert torch.allclose(loaded[k], fused[k], atol=1e-6), k
    base = UNet2DConditionModel.from_pretrained(model.pretrained, subfolder="unet").state_dict()
    assert any(not torch.equal(base[k], fused[k]) for k in moved)  # the adapters did change the weights

    half = UNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet", variant="fp16", torch_dtype=torch.float16)
    assert all(torch.equal(half.state_dict()[k], fused[k].half()) for k in fused)
    full = UNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet")  # no variant: the fp32 weights
    assert all(torch.equal(full.state_dict()[k], fused[k]) for k in fused)


def test_the_model_card_names_the_base_the_data_the_settings_and_how_to_load(trained, tmp_path):
    _, model = trained
    card = export.model_card(SUMMARY, pretrained="CompVis/stable-diffusion-v1-4", family="sd1", lr=5e-7, beta=5000,
                             pairs=45834)
    assert card.startswith("---\nlibrary_name: diffusers\nbase_model: CompVis/stable-diffusion-v1-4\n")
    for line in ("| preference pairs | 45,834 |", "| steps x global batch | 12 x 4 |", "| learning rate, beta | 5e-07, 5000 |",
                 "| fine-tuned | LoRA of rank 4 (fused into unet/; adapters in lora/) |",
                 "| last step's loss, implicit accuracy | 0.6012, 0.7500 |",
                 'pipe = StableDiffusionPipeline.from_pretrained("CompVis/stable-diffusion-v1-4", unet=unet, '
                 'torch_dtype=torch.float16)', 'pipe.load_lora_weights("<this folder>/lora")'):
        assert line in card, line
    full = export.model_card({**SUMMARY, "lora_rank": None}, pretrained="stabilityai/stable-diffusion-xl-base-1.0",
                             family="sdxl", lr=1e-8, beta=5000, pairs=None)
    assert "| fine-tuned | the full UNet |" in full and "load_lora_weights" not in full
    assert "StableDiffusionXLPipeline" in full and "| preference pairs | unknown |" in full
    local = export.model_card(SUMMARY, pretrained="/scratch/me/sd1", family="sd1", lr=5e-7, beta=5000, pairs=1)
    assert "base_model:" not in local and "| base model | `/scratch/me/sd1` |" in local  # a path means nothing elsewhere
    assert card == export.model_card(SUMMARY, pretrained="CompVis/stable-diffusion-v1-4", family="sd1", lr=5e-7,
                                     beta=5000, pairs=45834)  # no timings: runs compare byte for byte
