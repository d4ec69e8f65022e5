"""VQA score with BLIP-2 (rule candidates_score; TIFA evaluation later reuses it).

score(image) = 100 x fraction of the prompt's questions answered correctly.

Fast path (scores.vqa.method = fast):
  - the vision tower and Q-Former run ONCE per image (get_image_features), not once per
    question; their projected query outputs replace the <image> placeholder tokens of
    every question's input;
  - all (image, question) pairs of a prompt are batched through the T5 encoder once;
  - a yes/no question is decided by ONE decoder step: the logits of the "yes" and "no"
    tokens (ids from the tokenizer) are compared. This equals greedy generation whenever
    greedy generation answers yes or no, and never produces an off-list answer;
  - a multiple-choice question picks the choice with the highest teacher-forced
    log-likelihood log p(choice tokens, </s> | image, question): summed over the tokens
    (choice_likelihood = sum), which favours short choices, or their mean per token
    (choice_likelihood = mean, length-normalised).
Authors' method (method = authors), as their released scoring script does it: free greedy
generation per (image, question) of up to 512 new tokens from their prompt text
"Question: {q} Choices:['yes','no'] Answer:" (the same choices for every question), and the
answer counts as wrong if its text contains "no" or "b" (their yes-only questions).

The fast path's prompt is BLIP-2's VQA format "Question: {q} Answer:".
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

if TYPE_CHECKING:
    from agfsync.core.sections import VQAScoreSettings

log = logging.getLogger(__name__)

PROMPT = "Question: {question} Answer:"
# The authors' scoring script: its prompt text, verbatim, and its generate() limit
AUTHORS_PROMPT = "Question: {question} Choices:['yes','no'] Answer:"
AUTHORS_MAX_NEW_TOKENS = 512


def is_yes_no(choices: list[str]) -> bool:
    return sorted(c.strip().lower() for c in choices) == ["no", "yes"]


def authors_rule_correct(text: str) -> bool:
    """The released code's check: any 'no' or 'b' in the answer text makes it wrong."""
    lowered = text.lower()
    return "no" not in lowered and "b" not in lowered


class VQAScorer:
    def __init__(self, model, processor, device: torch.device, *, method: str = "fast", batch_size: int = 64,
                 choice_likelihood: str = "sum"):
        if method not in ("fast", "authors"):
            raise ValueError(f"unknown VQA method {method!r} (expected 'fast' or 'authors')")
        if choice_likelihood not in ("sum", "mean"):
            raise ValueError(f"unknown choice likelihood {choice_likelihood!r} (expected 'sum' or 'mean')")
        self.model, self.processor, self.device = model, processor, device
        self.method, self.batch_size, self.choice_likelihood = method, batch_size, choice_likelihood
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<image>")
        self.num_query_tokens = model.config.num_query_tokens
        self.yes_id = self._single_token("yes")
        self.no_id = self._single_token("no")
        self.start_id = model.config.text_config.decoder_start_token_id

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise ValueError(f"VQA tokenizer splits {word!r} into {len(ids)} tokens; the yes/no fast path needs one")
        return ids[0]

    # ------------------------------------------------------------------ inputs

    def _pixel_values(self, images) -> torch.Tensor:
        pixels = self.processor.image_processor(images=images, return_tensors="pt").pixel_values
        return pixels.to(self.device, self.model.dtype)

    def _question_ids(self, questions: list[str]) -> list[list[int]]:
        """[<image> x num_query_tokens] + tokens of the prompt, as Blip2Processor builds them."""
        image_tokens = [self.image_token_id] * self.num_query_tokens
        encoded = self.tokenizer([PROMPT.format(question=q) for q in questions]).input_ids
        return [image_tokens + ids for ids in encoded]

    def _encode(self, features_IQD: torch.Tensor, image_index: list[int], ids: list[list[int]]):
        """T5 encoder over (image, question) rows; returns (encoder outputs, attention mask)."""
        width = max(len(row) for row in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        embeds = self.model.get_input_embeddings()(input_ids)
        image_rows = features_IQD[torch.tensor(image_index, device=self.device)].to(embeds.dtype)
        placeholder = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(placeholder, image_rows)
        encoder = self.model.language_model.get_encoder()
        return encoder(inputs_embeds=embeds, attention_mask=mask, return_dict=True), mask

    # ------------------------------------------------------------------ answers

    @torch.no_grad()
    def answer(self, images, qa: list[dict]) -> list[list[str]]:
        """answers[i][j]: the model's answer to question j about image i (a choice, or for
        the authors' method the generated text)."""
        if self.method == "authors":
            return self.generate_answers(images, qa, template=AUTHORS_PROMPT, max_new_tokens=AUTHORS_MAX_NEW_TOKENS)
        features = self.model.get_image_features(pixel_values=self._pixel_values(images), return_dict=True).pooler_output
        ids = self._question_ids([q["question"] for q in qa])
        pairs = [(i, j) for i in range(len(images)) for j in range(len(qa))]
        answers = [[None] * len(qa) for _ in images]
        for start in range(0, len(pairs), self.batch_size):
            chunk = pairs[start : start + self.batch_size]
            encoded, mask = self._encode(features, [i for i, _ in chunk], [ids[j] for _, j in chunk])
            yes_no = [n for n, (_, j) in enumerate(chunk) if is_yes_no(qa[j]["choices"])]
            if yes_no:
                for n, choice in zip(yes_no, self._decide_yes_no(encoded, mask, yes_no)):
                    i, j = chunk[n]
                    answers[i][j] = choice
            for n, (i, j) in enumerate(chunk):
                if answers[i][j] is None:
                    answers[i][j] = self._best_choice(encoded, mask, n, qa[j]["choices"])
        return answers

    def _decide_yes_no(self, encoded, mask, rows: list[int]) -> list[str]:
        index = torch.tensor(rows, device=self.device)
        hidden = encoded.last_hidden_state[index]
        start = torch.full((len(rows), 1), self.start_id, dtype=torch.long, device=self.device)
        logits = self.model.language_model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask[index], decoder_input_ids=start
        ).logits[:, 0]
        return ["yes" if y > n else "no" for y, n in zip(logits[:, self.yes_id].tolist(), logits[:, self.no_id].tolist())]

    def _best_choice(self, encoded, mask, row: int, choices: list[str]) -> str:
        targets = [self.tokenizer(c).input_ids for c in choices]  # choice tokens + </s>
        width = max(map(len, targets))
        labels = torch.full((len(choices), width), -100, dtype=torch.long)
        for c, ids in enumerate(targets):
            labels[c, : len(ids)] = torch.tensor(ids)
        labels = labels.to(self.device)
        hidden = encoded.last_hidden_state[row : row + 1].expand(len(choices), -1, -1)
        decoder_input = torch.cat(
            [torch.full((len(choices), 1), self.start_id, device=self.device, dtype=torch.long),
             labels[:, :-1].clamp(min=0)], dim=1)
        logits = self.model.language_model(
            encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask[row : row + 1].expand(len(choices), -1),
            decoder_input_ids=decoder_input,
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total = (logp * (labels != -100)).sum(dim=1)
        if self.choice_likelihood == "mean":
            total = total / (labels != -100).sum(dim=1)
        return choices[int(torch.argmax(total))]

    @torch.no_grad()
    def generate_answers(self, images, qa: list[dict], *, template: str = PROMPT,
                         max_new_tokens: int = 10) -> list[list[str]]:
        """One greedy generate() call per (image, question) on `template`'s text: the
        authors' approach (their template and limit), and with BLIP-2's own VQA prompt the
        reference the fast path is checked against."""
        answers = []
        for image in images:
            row = []
            for q in qa:
                inputs = self.processor(images=image, text=template.format(question=q["question"]), return_tensors="pt")
                inputs = inputs.to(self.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
                row.append(self.processor.batch_decode(out, skip_special_tokens=True)[0].strip())
            answers.append(row)
        return answers

    # ------------------------------------------------------------------ scores

    def correct(self, images, qa: list[dict]) -> np.ndarray:
        """Boolean matrix (images x questions): was each question answered correctly?"""
        answers = self.answer(images, qa)
        if self.method == "authors":
            return np.array([[authors_rule_correct(a) for a in row] for row in answers], dtype=bool)
        return np.array(
            [[a.strip().lower() == q["answer"].strip().lower() for a, q in zip(row, qa)] for row in answers], dtype=bool
        )

    def score(self, images, qa: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """(scores 0..100 per image, correctness matrix)."""
        if not qa:
            raise ValueError("VQA score needs at least one question")
        correct = self.correct(images, qa)
        return 100.0 * correct.mean(axis=1), correct


def load_vqa_scorer(vqa: VQAScoreSettings, device=None, *, method: str | None = None) -> VQAScorer:
    """The scorer of scores.vqa; `method` overrides scores.vqa.method (TIFA evaluation always
    scores the choices: method "fast")."""
    from agfsync.models.loaders import load_blip2

    model, processor, device = load_blip2(vqa.model, device=device, load_in_8bit=vqa.load_in_8bit)
    return VQAScorer(model, processor, device, method=method or vqa.method, batch_size=vqa.batch_size,
                     choice_likelihood=vqa.choice_likelihood)
