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
