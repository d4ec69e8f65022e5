"""Helpers for tests and benchmarks on tiny random models (not used by the pipeline)."""

from __future__ import annotations

from pathlib import Path

import torch


def force_yes_no_head(model, processor, images, questions) -> None:
    """Make a tiny BLIP-2's LM head able to prefer only "yes" or "no".

    Greedy generation then always starts with one of the two, so the fast yes/no path can
    be compared answer for answer with generate(). The yes-direction is the main direction
    of variation of the decoder states on `images` x `questions`, thresholded at its median,
    so the answer depends on the image and the question (a random direction would be
    dominated by the shared start-token state and answer the same everywhere).
    """
    from agfsync.models.vqa import VQAScorer

    tok = processor.tokenizer
    yes, no = tok("yes", add_special_tokens=False).input_ids[0], tok("no", add_special_tokens=False).input_ids[0]
    head = model.language_model.get_output_embeddings()
    if head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr():
        raise ValueError("the LM head is tied to the input embeddings; rewriting it would change the inputs too")
    states = []
    hook = head.register_forward_hook(lambda mod, inp, out: states.append(inp[0].reshape(-1, inp[0].shape[-1])))
    try:
        VQAScorer(model, processor, next(model.parameters()).device).answer(images, questions)
    finally:
        hook.remove()
    hidden = torch.cat(states).float()
    direction = torch.linalg.svd(hidden - hidden.mean(0), full_matrices=False).Vh[0]
    mean = hidden.mean(0) / hidden.mean(0).norm()
    direction = direction - (direction @ mean) * mean
    # logit(yes) - logit(no) = 2 h.w. Projections on `direction` are skewed, so move the
    # threshold from 0 to their median through the mean direction, along which every state
    # has nearly the same component: then about half the decisions are "yes".
    shift = torch.median(hidden @ direction) / (hidden @ mean).mean()
    w = direction - shift * mean
    with torch.no_grad():
        head.weight.zero_()
        head.weight[yes] = w.to(head.weight.dtype)
        head.weight[no] = -w.to(head.weight.dtype)


def toy_cache(out_dir: Path, num_pairs: int = 16, chunk_size: int = 8, family: str = "sd1", *, latent_size: int = 8,
              embed_dim: int | None = None, pooled_dim: int = 32, resolution: int = 64) -> Path:
    """A DPO train cache (agfsync.train.data format) of toy pairs for the tiny models. Winners drawn from one distribution (smooth, positive), losers from another (noisy, negative)."""
    from agfsync.train.data import save_chunk, write_index

    g = torch.Generator().manual_seed(11)
    out_dir.mkdir(parents=True, exist_ok=True)
    chunks = []
    for c in range(0, num_pairs, chunk_size):
        n = min(chunk_size, num_pairs - c)
        base = torch.randn(n, 4, 1, 1, generator=g)
        tensors = {
            "latents_w": (0.8 + 0.3 * base.expand(n, 4, latent_size, latent_size)).half(),
            "latents_l": (-0.8 + torch.randn(n, 4, latent_size, latent_size, generator=g)).half(),
            "prompt_embeds": torch.randn(n, 77, embed_dim or (32 if family == "sd1" else 64), generator=g).half(),
        }
        if family == "sdxl":
            r = float(resolution)
            tensors["pooled"] = torch.randn(n, pooled_dim, generator=g).half()
            tensors["time_ids"] = torch.tensor([[r, r, 0.0, 0.0, r, r]] * n)
        chunks.append(save_chunk(out_dir, c // chunk_size, tensors))
    write_index(out_dir, "toy", family, resolution, chunk_size, chunks, [f"toy-{i:010d}" for i in range(num_pairs)], "toy")
    return out_dir
