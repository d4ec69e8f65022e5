"""Tiny random-initialised versions of every model family agfsync loads (rule models_tiny,
command `agfsync tiny-models OUTDIR`).

Each is saved in the on-disk format of the real checkpoint it stands for and is loaded by
the same function in agfsync.models.loaders:

  sd1/                 diffusers StableDiffusionPipeline (CompVis/stable-diffusion-v1-4 layout)
  sdxl/                diffusers StableDiffusionXLPipeline: two text encoders, pooled
                       embedding, text_time micro-conditioning (add_time_ids)
  clip/                transformers CLIPModel + CLIPProcessor (openai/clip-vit-base-patch16)
  blip2/               transformers Blip2ForConditionalGeneration with a T5 (flan-t5) LM,
                       Blip2Processor and a T5 tokenizer that knows "yes" and "no"
  aesthetic/backbone/  CLIPModel shaped like ViT-L/14 (patch 14)
  aesthetic/head.pth   LAION aesthetic-predictor head state dict (torch.save, as upstream)
  hps/                 open_clip model config + HPS-style checkpoint {"state_dict": ...}

Nothing touches the network: tokenizers are built here from word lists in the package.
torch is imported by the builders, not by this module (the CLI's --help stays fast).
Builds are deterministic (fixed seeds; MANIFEST.json records a sha256 of every file), so
two builds are byte-identical and tests can assert golden numbers on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from agfsync.core.dag import TINY_FAMILIES as FAMILIES  # the families, declared where the workflow reads them
from agfsync.models import tokenizers

log = logging.getLogger(__name__)

TEXT_MAX_LENGTH = 77  # CLIP's context length, as the real checkpoints
HPS_MODEL_NAME = "agfsync-tiny-ViT"

# ----------------------------------------------------------------------------- tokenizers


def _corpus_words() -> list[str]:
    """Words for the tiny vocabularies, from text the package ships (deterministic order)."""
    from agfsync.stages import prompts
    from agfsync.stages import qa

    texts = [prompts.SYSTEM_RULES, qa.system_message("multiple_choice"), qa.EXAMPLE_CAPTION]
    for name in prompts.CATEGORIES:
        cat = prompts.category(name)
        texts += [cat.name, cat.focus, *cat.examples]
    texts += [q["question"] + " " + " ".join(q["choices"]) for mode in qa.MODES for q in qa.EXAMPLES[mode]]
    words: dict[str, None] = {}
    for text in texts:
        for word in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split():
            words.setdefault(word, None)
    for word in ("yes", "no", "a", "an", "the", "is", "are", "there", "what", "how", "many", "color", "photo", "of"):
        words.setdefault(word, None)
    return list(words)


def build_clip_tokenizer():
    """The demo's CLIP BPE tokenizer over the package's corpus words."""
    return tokenizers.clip_tokenizer(_corpus_words(), TEXT_MAX_LENGTH)


def build_t5_tokenizer():
    """The demo's T5 (Unigram) tokenizer over the package's corpus words."""
    return tokenizers.t5_tokenizer(_corpus_words())


# ----------------------------------------------------------------------------- builders


def _seeded(name: str) -> None:
    import torch

    torch.manual_seed(int.from_bytes(hashlib.sha256(f"agfsync-tiny/{name}".encode()).digest()[:4], "big"))


def _text_config(vocab_size: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=TEXT_MAX_LENGTH, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1, **extra,
    )


def _vae():
    from diffusers import AutoencoderKL

    # Four blocks, as the real VAE: 8x downsampling, 4 latent channels.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=16, sample_size=64, scaling_factor=0.18215,
    )


def sd1_unet():
    """The tiny SD 1.x UNet (random weights from the current torch seed); also used by the kernel tests."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
    )


def sdxl_unet():
    """The tiny SDXL UNet: linear projections, added time and text conditioning, 2-layer transformers."""
    from diffusers import UNet2DConditionModel

    # cross_attention_dim = 32 + 32 (both encoders' hidden states concatenated);
    # projection_class_embeddings_input_dim = 6 add_time_ids x 8 + 32 pooled.
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2), projection_class_embeddings_input_dim=80,
        cross_attention_dim=64, norm_num_groups=32,
    )


def build_sd1(out: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = build_clip_tokenizer()
    _seeded("sd1")
    unet = sd1_unet()
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def build_sdxl(out: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = build_clip_tokenizer()
    _seeded("sdxl")
    unet = sdxl_unet()
    text_encoder = CLIPTextModel(_text_config(len(tokenizer)))
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(len(tokenizer), projection_dim=32))
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        steps_offset=1, timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _clip_model(vocab_size: int, image_size: int, patch_size: int, projection_dim: int = 32):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=image_size, patch_size=patch_size, projection_dim=projection_dim,
    )
    text = _text_config(vocab_size, projection_dim=projection_dim)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection_dim)
    return CLIPModel(config)


def _clip_processor(tokenizer, image_size: int):
    from transformers import CLIPImageProcessor, CLIPProcessor

    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_clip(out: Path) -> None:
    tokenizer = build_clip_tokenizer()
    _seeded("clip")
    model = _clip_model(len(tokenizer), image_size=32, patch_size=8)  # ViT-B/16 shape, 4x4 patches
    model.save_pretrained(out, safe_serialization=True)
    _clip_processor(tokenizer, 32).save_pretrained(out)


def build_aesthetic(out: Path) -> None:
    import torch

    from agfsync.models.loaders import AestheticMLP

    tokenizer = build_clip_tokenizer()
    _seeded("aesthetic")
    backbone = _clip_model(len(tokenizer), image_size=28, patch_size=14)  # ViT-L/14 shape, 2x2 patches
    backbone.save_pretrained(out / "backbone", safe_serialization=True)
    _clip_processor(tokenizer, 28).save_pretrained(out / "backbone")
    head = AestheticMLP((32, 64, 32, 16, 8, 1))  # 768-1024-128-64-16-1 scaled down
    with torch.no_grad():  # centre outputs near 5 on the 1..10 scale, as the real predictor
        head.layers[7].bias.fill_(5.0)
    torch.save(head.state_dict(), out / "head.pth")


def build_blip2(out: Path) -> None:
    from transformers import (
        Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig, Blip2VisionConfig,
        BlipImageProcessor, T5Config,
    )

    tokenizer = build_t5_tokenizer()
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    num_query_tokens = 4
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    vocab_size = len(processor.tokenizer)  # includes the <image> token the processor adds
    _seeded("blip2")
    config = Blip2Config(
        vision_config=Blip2VisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
        ).to_dict(),
        qformer_config=Blip2QFormerConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, encoder_hidden_size=32,
            vocab_size=vocab_size,
        ).to_dict(),
        text_config=T5Config(
            vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2, num_heads=4,
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, feed_forward_proj="gated-gelu",
            tie_word_embeddings=False,
        ).to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    # flan-t5 keeps separate input and output embeddings; Blip2Config would otherwise tie them.
    config.text_config.tie_word_embeddings = False
    config.tie_word_embeddings = False
    model = Blip2ForConditionalGeneration(config)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def build_hps(out: Path) -> None:
    import open_clip
    import torch

    out.mkdir(parents=True, exist_ok=True)
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": TEXT_MAX_LENGTH, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
    }
    config_path = out / f"{HPS_MODEL_NAME}.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    open_clip.add_model_config(str(config_path))
    _seeded("hps")
    model = open_clip.create_model(HPS_MODEL_NAME, pretrained=None, device="cpu")
    torch.save({"state_dict": model.state_dict()}, out / "HPS_tiny.pt")


def build_sbert(out: Path) -> None:
    """The sentence embedder of TIFA's official answering (the real one: all-mpnet-base-v2, MPNet)."""
    from transformers import MPNetConfig, MPNetModel

    tokenizer = tokenizers.wordpiece_tokenizer(_corpus_words())
    _seeded("sbert")
    model = MPNetModel(MPNetConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37, max_position_embeddings=130,
                                   pad_token_id=tokenizer.pad_token_id))
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build_fid(out: Path) -> None:
    """FID feature network for the demo (the real one is torch-fidelity's InceptionV3)."""
    from agfsync.models.fid import TinyFeatureNet

    _seeded("fid")
    TinyFeatureNet(input_size=32, num_features=16).save_pretrained(out)


def build_imagereward(out: Path) -> None:
    from agfsync.demo.tiny_rewards import build_imagereward as build

    build(out)


BUILDERS = {
    "sd1": build_sd1, "sdxl": build_sdxl, "clip": build_clip,
    "blip2": build_blip2, "aesthetic": build_aesthetic, "hps": build_hps, "fid": build_fid,
    "sbert": build_sbert, "imagereward": build_imagereward,
}



def build_all(outdir: str | Path, families=FAMILIES) -> dict:
    """Build the tiny models into `outdir` (replaced atomically: built in a temp dir,
    then renamed), write MANIFEST.json, return the manifest."""
    outdir = Path(outdir)
    tmp = outdir.with_name(f".{outdir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    import torch

    from agfsync.core.io import sha256_file

    manifest = {"families": {}, "torch": torch.__version__}
    for family in families:
        log.info("tiny-models: building %s", family)
        BUILDERS[family](tmp / family)
        files = sorted(p for p in (tmp / family).rglob("*") if p.is_file())
        manifest["families"][family] = {
            "files": {str(p.relative_to(tmp)): sha256_file(p) for p in files},
            "bytes": sum(p.stat().st_size for p in files),
        }
    (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if outdir.exists():
        shutil.rmtree(outdir)
    tmp.rename(outdir)
    return manifest
