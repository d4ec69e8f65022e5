"""What a finished training leaves next to the fine-tuned UNet, for sharing it
(results/{model}/agfsync/, written by rank 0 into the temporary folder that replaces it):

  unet/diffusion_pytorch_model.fp16.safetensors  an fp16 copy of the full UNet (diffusers'
      variant "fp16": `UNet2DConditionModel.from_pretrained(dir, subfolder="unet",
      variant="fp16", torch_dtype=torch.float16)`), next to the fp32 weights the workflow uses;
  lora/pytorch_lora_weights.safetensors  LoRA runs (train.lora_rank): the trained adapters in
      diffusers' format, which `pipe.load_lora_weights(dir + "/lora")` loads onto the base
      model (alpha = rank, so scale 1: the same weights as the fused unet/);
  README.md  a model card: base model, data, training settings and outcome, how to load.
      It is written when training ends, before the evaluation: the metrics with their CIs are
      in results/{model}/*.json and the report, which the card names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from agfsync import __version__
from agfsync.core.downloads import is_hub_id


def adapter_state(unet) -> dict[str, torch.Tensor]:
    """The LoRA adapters of a UNet with peft layers, before they are fused (rank 0; ZeRO <= 2 keeps them whole)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(unet).items()}


def write_extras(folder: Path, summary: dict, unet, adapter: dict | None, model, *, pairs: int) -> None:
    """The model card, the LoRA adapters (LoRA runs) and the fp16 copy into `folder`; `model`: its ModelSettings."""
    (folder / "README.md").write_text(encoding="utf-8", data=model_card(summary, pretrained=model.pretrained, family=model.family,
                                                 lr=model.train.lr, beta=model.train.beta_dpo, pairs=pairs))
    if adapter is not None:
        save_lora(adapter, folder / "lora", model.family == "sdxl")
    save_fp16(unet, folder / "unet")


def save_lora(adapter: dict[str, torch.Tensor], out_dir: Path, sdxl: bool) -> None:
    """peft's adapter state (get_peft_model_state_dict) in diffusers' LoRA format."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    pipeline = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    pipeline.save_lora_weights(str(out_dir), unet_lora_layers=convert_state_dict_to_diffusers(adapter),
                               safe_serialization=True)


def save_fp16(unet, unet_dir: Path) -> None:
    """An fp16 copy beside the fp32 weights (changes `unet`'s dtype: call it last)."""
    unet.to(torch.float16).save_pretrained(str(unet_dir), variant="fp16", safe_serialization=True)


def model_card(summary: dict, *, pretrained: str, family: str, lr: float, beta: float, pairs: int | None) -> str:
    """README.md of the fine-tuned model folder (deterministic: no timings, so runs compare byte for byte)."""
    final = summary.get("final") or {}
    pipeline = "StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline"
    lora = summary.get("lora_rank")
    rows = [("base model", f"`{pretrained}`"), ("method", "Diffusion-DPO (Wallace et al. 2024) on AGFSync's "
             "AI-feedback preference pairs (An et al., AAAI 2025): best vs worst of N candidates by VQA, CLIP "
             "and aesthetic scores"),
            ("preference pairs", "unknown" if pairs is None else f"{pairs:,}"),
            ("steps x global batch", f"{summary['steps']} x {summary['global_batch']}"),
            ("learning rate, beta", f"{lr:g}, {beta:g}"),
            ("loss, noise", f"{summary['loss']}, {summary['noise']}"),
            ("optimizer, ZeRO stage", f"{summary['optimizer']}, {summary['zero_stage']}"),
            ("fine-tuned", f"LoRA of rank {lora} (fused into unet/; adapters in lora/)" if lora else "the full UNet"),
            ("last step's loss, implicit accuracy",
             ", ".join(f"{final[k]:.4f}" if isinstance(final.get(k), float) else "n/a" for k in ("loss", "implicit_acc"))),
            ("config digest", f"`{summary.get('config_hash')}` (agfsync.core.config.config_digest)"),
            ("trained by", f"agfsync {__version__}")]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    lora_text = ('\n# or the adapters alone, on the base pipeline:\n'
                 f'# pipe = {pipeline}.from_pretrained("{pretrained}"); pipe.load_lora_weights("<this folder>/lora")'
                 if lora else "")
    base = f"base_model: {pretrained}\n" if is_hub_id(pretrained) else ""  # a local path means nothing elsewhere
    return f"""---
library_name: diffusers
{base}tags: [text-to-image, diffusion-dpo, agfsync]
---

# {summary['model']}: AGFSync fine-tune of {pretrained}

| | |
|---|---|
{table}

Evaluation (TIFA, HPS v2, CLIP, aesthetic, MJHQ-30K FID where enabled, each base vs this model
with a paired bootstrap 95% CI): `results/{summary['model']}/*.json`, `results/metrics.tsv` and
`results/report.html` of the run that trained it. Training curve: `metrics.jsonl`; everything
above and more: `summary.json`.

## How to load

```python
import torch
from diffusers import {pipeline}, UNet2DConditionModel

unet = UNet2DConditionModel.from_pretrained("<this folder>", subfolder="unet", variant="fp16",
                                            torch_dtype=torch.float16)  # or fp32: no variant, no dtype
pipe = {pipeline}.from_pretrained("{pretrained}", unet=unet, torch_dtype=torch.float16){lora_text}
```
"""
