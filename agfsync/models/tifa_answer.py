"""TIFA's official answering protocol (eval.tifa.answering: tifa), as tifascore does it.

tifascore (Hu et al., github.com/Yushi-Hu/tifa, tifascore/vqa_models.py and mc_sbert.py), for its
BLIP-2 (LAVIS blip2_t5): the model generates a free-form answer to

    Answer the multiple-choice question. Question: {question} Choices: {c1, c2, ...} Answer:

with LAVIS' generate() defaults (beam search with 5 beams, at most 30 new tokens, at least 1);
if the text is not literally one of the choices, a sentence embedding model (SBERT,
sentence-transformers/all-mpnet-base-v2: mean of the token states over the attention mask,
L2-normalised) maps it to the choice of highest cosine similarity. A question counts as
correct when the mapped choice equals the benchmark's answer.

Ours (eval.tifa.answering: choices, agfsync.models.vqa): yes/no by the two tokens' logits,
other questions by choice likelihood. With `tifa` the evaluation also records our choice
per question, so the result says how often the two protocols disagree on the same images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TIFA_PROMPT = "Answer the multiple-choice question. Question: {question} Choices: {choices} Answer:"
# LAVIS Blip2T5.generate() defaults, which tifascore's BLIP2.vqa leaves as they are
NUM_BEAMS, MAX_NEW_TOKENS, MIN_LENGTH = 5, 30, 1
SBERT = "sentence-transformers/all-mpnet-base-v2"


def tifa_prompt(question: str, choices: list[str]) -> str:
    return TIFA_PROMPT.format(question=question, choices=", ".join(choices))


class SentenceEmbedder:
    """A sentence-transformers model through transformers: mean pooling over the attention
    mask, then L2 normalisation (tifascore's SBERTModel; sentence-transformers' own pipeline
    for all-mpnet-base-v2)."""

    def __init__(self, model, tokenizer, device):
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device

    @torch.no_grad()
    def embed(self, sentences: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(sentences, padding=True, truncation=True, return_tensors="pt").to(self.device)
        states = self.model(**encoded).last_hidden_state.float()
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1).cpu()

    def nearest(self, text: str, choices: list[str]) -> str:
        """The choice whose embedding has the highest cosine similarity with `text`'s (the first on ties)."""
        sims = self.embed(choices) @ self.embed([text])[0]
        return choices[int(torch.argmax(sims))]


def load_sentence_embedder(pretrained: str, device) -> SentenceEmbedder:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pretrained)
    model = AutoModel.from_pretrained(pretrained, dtype=torch.float32).to(device)
    return SentenceEmbedder(model, tokenizer, device)


class TifaAnswerer:
    """BLIP-2 free-form answers mapped to a choice, one batched beam search per image."""

    def __init__(self, model, processor, device, embedder: SentenceEmbedder):
        self.model, self.processor, self.device, self.embedder = model, processor, device, embedder

    @torch.no_grad()
    def generate(self, image, qa: list[dict]) -> list[str]:
        """The free-form answer to every question of `qa` about `image` (stripped text)."""
        prompts = [tifa_prompt(q["question"], q["choices"]) for q in qa]
        inputs = self.processor(images=[image] * len(prompts), text=prompts, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        out = self.model.generate(**inputs, num_beams=NUM_BEAMS, max_new_tokens=MAX_NEW_TOKENS,
                                  min_length=MIN_LENGTH, do_sample=False, length_penalty=1.0, repetition_penalty=1.0)
        return [text.strip() for text in self.processor.batch_decode(out, skip_special_tokens=True)]

    def to_choice(self, free_form: str, choices: list[str]) -> str:
        """tifascore's rule: the text itself when it is one of the choices, else the nearest by SBERT."""
        return free_form if free_form in choices else self.embedder.nearest(free_form, choices)

    def answer(self, image, qa: list[dict]) -> tuple[list[str], list[str]]:
        """(free-form answers, mapped choices) for the questions of `qa`."""
        free = self.generate(image, qa)
        return free, [self.to_choice(text, q["choices"]) for text, q in zip(free, qa)]
