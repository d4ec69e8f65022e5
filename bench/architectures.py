"""The real UNet architectures of SD 1.5 and SDXL-base, as diffusers configs (no weights).

For GPU benchmarks of real-sized generation and DPO steps with random weights, where no
checkpoint can be downloaded. The configs are those of the published unet/config.json
files; tests check the parameter counts against docs/method.md, Architectures (SD1.5 859,520,964;
SDXL 2,567,463,684).
"""

from __future__ import annotations

SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "norm_eps": 1e-5,
    "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1, "act_fn": "silu",
}

SDXL_UNET = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20), "cross_attention_dim": 2048,
    "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816, "norm_num_groups": 32, "norm_eps": 1e-5,
    "flip_sin_to_cos": True, "freq_shift": 0, "downsample_padding": 1, "act_fn": "silu",
}

UNETS = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}


def build_unet(name: str, *, empty: bool = False):
    """A randomly initialised real-sized UNet; `empty` builds it on the meta device (no memory)."""
    from diffusers import UNet2DConditionModel

    if empty:
        from accelerate import init_empty_weights

        with init_empty_weights():
            return UNet2DConditionModel(**UNETS[name])
    return UNet2DConditionModel(**UNETS[name])


# The other components of the published pipelines (their config.json files), for real-sized
# generation with random weights. The VAE is the same architecture in SD 1.5 and SDXL; only
# its scaling factor differs.
VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "act_fn": "silu",
}
VAE_SCALING = {"sd15": 0.18215, "sdxl": 0.13025}
RESOLUTION = {"sd15": 512, "sdxl": 1024}
CLIP_L_TEXT = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "max_position_embeddings": 77, "hidden_act": "quick_gelu", "vocab_size": 49408}
# SDXL's second encoder: OpenCLIP ViT-bigG/14's text tower, with its 1280-d projection
CLIP_BIGG_TEXT = {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
                  "max_position_embeddings": 77, "hidden_act": "gelu", "vocab_size": 49408, "projection_dim": 1280}
# Salesforce/blip2-flan-t5-xxl: EVA ViT-g/14, a 12-layer Q-Former with 32 queries, flan-t5-xxl
BLIP2_VISION = {"hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39, "num_attention_heads": 16,
                "image_size": 224, "patch_size": 14, "layer_norm_eps": 1e-6, "qkv_bias": True}
BLIP2_QFORMER = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "cross_attention_frequency": 2, "encoder_hidden_size": 1408, "vocab_size": 30522}
FLAN_T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
               "num_decoder_layers": 24, "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
               "tie_word_embeddings": False, "decoder_start_token_id": 0, "pad_token_id": 0, "eos_token_id": 1}
BLIP2_QUERY_TOKENS = 32


def _text_config(spec: dict, tokenizer):
    from transformers import CLIPTextConfig

    # our tokenizer's special ids (a real CLIP BPE's are 49406/49407); the vocabulary stays the real size
    return CLIPTextConfig(**spec, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id)


def build_pipeline(name: str, out, *, device="cpu", dtype=None) -> None:
    """A randomly initialised real-sized SD 1.5 or SDXL-base pipeline saved at `out` in the
    diffusers layout (so that agfsync loads it with from_pretrained, as a real checkpoint),
    weights drawn on `device`. The tokenizer is the demo's (no download); the text encoders
    keep the real 49,408-token vocabulary."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from agfsync.demo.tiny_models import build_clip_tokenizer

    tokenizer = build_clip_tokenizer()
    schedule = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                    steps_offset=1)
    torch.manual_seed(0)
    with torch.device(device):
        unet = build_unet(name)
        vae = AutoencoderKL(**VAE, sample_size=RESOLUTION[name], scaling_factor=VAE_SCALING[name])
        text_encoder = CLIPTextModel(_text_config(CLIP_L_TEXT, tokenizer))
        if name == "sdxl":
            text_encoder_2 = CLIPTextModelWithProjection(_text_config(CLIP_BIGG_TEXT, tokenizer))
            pipe = StableDiffusionXLPipeline(
                vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                tokenizer_2=tokenizer, unet=unet, force_zeros_for_empty_prompt=True,
                scheduler=EulerDiscreteScheduler(**schedule, timestep_spacing="leading"))
        else:
            pipe = StableDiffusionPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, safety_checker=None,
                feature_extractor=None, requires_safety_checker=False,
                scheduler=PNDMScheduler(**schedule, skip_prk_steps=True, set_alpha_to_one=False))
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(out, safe_serialization=True)


def blip2_xxl_config(processor, **scale):
    """Blip2Config of Salesforce/blip2-flan-t5-xxl; `scale` overrides sizes per part (vision=..., qformer=...,
    text=... dicts) for tests that materialise a small model through the same code."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, T5Config

    config = Blip2Config(
        vision_config=Blip2VisionConfig(**{**BLIP2_VISION, **scale.get("vision", {})}).to_dict(),
        qformer_config=Blip2QFormerConfig(**{**BLIP2_QFORMER, **scale.get("qformer", {})}).to_dict(),
        text_config=T5Config(**{**FLAN_T5_XXL, **scale.get("text", {})}).to_dict(),
        num_query_tokens=processor.num_query_tokens,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"))
    config.text_config.tie_word_embeddings = False  # flan-t5 keeps separate input and output embeddings
    config.tie_word_embeddings = False
    return config


def build_blip2_xxl(processor, *, device="cpu", dtype=None, config=None):
    """A randomly initialised BLIP-2 flan-t5-xxl (~12.5B parameters as transformers 5 builds it), built
    on the meta device and materialised on `device` (left on the meta device if that is `device`):
    weights N(0, 0.02), norms 1, biases 0; buffers (position ids) kept. `processor` is a
    Blip2Processor with 32 query tokens; `config` replaces blip2_xxl_config(processor)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import Blip2ForConditionalGeneration

    config = config or blip2_xxl_config(processor)
    with init_empty_weights(include_buffers=False):
        model = Blip2ForConditionalGeneration(config)
    if dtype is not None:
        model.to(dtype)  # still on the meta device: allocated once, in dtype
    if torch.device(device).type == "meta":
        return model.eval()
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    model = model.to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 or name.endswith("query_tokens"):
                p.normal_(0.0, 0.02, generator=g)
            elif name.endswith("bias"):
                p.zero_()
            else:  # LayerNorm / T5 RMSNorm weights
                p.fill_(1.0)
        for name, b in buffers.items():
            module, _, attr = name.rpartition(".")
            setattr(model.get_submodule(module), attr, b.to(device))  # plain attribute swap keeps the buffer
    return model.eval()


def flops(module, *args, **kwargs) -> int:
    """FLOPs of one call (torch.utils.flop_counter, 2 per multiply-add), counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        module(*args, **kwargs)
    return counter.get_total_flops()
