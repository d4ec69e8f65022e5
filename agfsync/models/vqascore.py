"""VQAScore (Lin et al. 2024, "Evaluating Text-to-Visual Generation with Image-to-Text
Generation") with a local BLIP-2 flan-T5 model, as an evaluation metric.

    VQAScore(image, prompt) = P(answer | image, question)
    question = 'Does this figure show "{prompt}"? Please answer yes or no.', answer = "Yes"

the likelihood of the answer under teacher forcing. The same metric through an
OpenAI-compatible endpoint that returns log-probabilities is
agfsync.stages.vqascore_endpoint.

What was verified in the authors' code (github linzhiqiu/t2v_metrics; the flan-T5 models
were removed from HEAD by commit 74c7208 "v3.1", so read at its parent 74c7208~1):

- t2v_metrics/models/vqascore_models/clip_t5_model.py (clip-flant5-xxl/-xl, the paper's
  model): default_question_template = 'Does this figure show "{}"? Please answer yes or no.',
  default_answer_template = "Yes"; both templates are formatted with the text. The labels
  are the tokenizer's ids of the answer (mm_utils.py `t5_tokenizer_image_token`: a plain
  tokenizer(...) call, so the T5 "</s>" is appended: "Yes" -> [Yes, </s>]), padded with
  IGNORE_INDEX = -100 (constants.py); the model runs with labels (teacher forcing) and the
  score is, per row, exp(-CrossEntropyLoss(reduction='mean')(logits, labels)), i.e.
  exp(-mean token cross-entropy over the answer's label tokens including </s>), padding
  ignored. Its question is wrapped in its own LLaVA-style chat format ('t5_chat': system
  message + " USER: <image>\\n{q} ASSISTANT: "), which is specific to CLIP-FlanT5.
- t2v_metrics/models/vqascore_models/instructblip_model.py (instructblip-flant5-xxl/-xl,
  the BLIP family in t2v_metrics): question template 'Question: Does this figure show "{}"?
  Please answer yes or no.' (the BLIP wrapping is the prefix "Question: " only, no trailing
  " Answer:"), answer template "yes" (lower case, per its comment "instruct-blip uses
  'yes' instead of 'Yes'"); the T5 encoder input is [query outputs] + tokens of the
  question (with </s>); labels = the output tokenizer's ids of the answer (with </s>), pad
  -> -100; score = exp(-CrossEntropyLoss(reduction='mean')) per row, as above.
- t2v_metrics/models/vqascore_models/vqa_model.py: the VQAScoreModel interface
  (question_template, answer_template); t2v_metrics/vqascore.py: default model
  clip-flant5-xxl.

What this module does: the score is exactly that formula, exp(mean over the answer's label
tokens, </s> included, of log p(token | image, question, earlier answer tokens)), with the
log-softmax in float32 (float64 for a float64 model). The question is wrapped as
t2v_metrics wraps it for its BLIP models, "Question: {q}" (BLIP_PROMPT), not in
agfsync.models.vqa's "Question: {q} Answer:". The default answer is the brief's and
clip-flant5's "Yes" (t2v_metrics' InstructBLIP default is "yes": pass answer="yes" to
reproduce it). The model is a plain BLIP-2 (Blip2ForConditionalGeneration, loaded by
agfsync.models.loaders.load_blip2), whose Q-Former does not see the question
(InstructBLIP's does). Its inputs are built as agfsync.models.vqa builds them:
num_query_tokens "<image>" placeholders + the tokenized question, the placeholders
replaced by the projected Q-Former outputs (the image features are computed once per
image). Images go through the checkpoint's own image processor (BLIP-2: resize to
224 x 224; t2v_metrics' InstructBLIP resizes the short side and centre-crops, which is the
same for square images). The question is not truncated (t2v_metrics' InstructBLIP cuts it
at max_txt_len = 128 tokens, left side; CLIP-FlanT5 at 2048). Numbers differ from
t2v_metrics' by the precision: bf16 autocast there, the model's dtype here (bf16 on CUDA,
fp32 on CPU: agfsync.models.loaders.default_dtype).
"""

from __future__ import annotations

import numpy as np
import torch

from agfsync.core.rewards import VQASCORE_ANSWER as ANSWER
from agfsync.core.rewards import VQASCORE_QUESTION as QUESTION

# How t2v_metrics wraps the question for its BLIP (InstructBLIP flan-T5) models.
BLIP_PROMPT = "Question: {question}"


def _check_template(template: str, what: str) -> None:
    try:
        template.format(prompt="a prompt")
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"VQAScore {what} template {template!r} must use only the field {{prompt}} "
                         f"(literal braces doubled): {err}") from None


class VQAScoreScorer:
    """VQAScore of images for a prompt with a BLIP-2 flan-T5 model (see the module docstring)."""

    def __init__(self, model, processor, device, *, question: str = QUESTION, answer: str = ANSWER,
                 batch_size: int = 16):
        if getattr(model.config, "use_decoder_only_language_model", False):
            raise ValueError("VQAScore here needs a BLIP-2 with an encoder-decoder (flan-T5) language model")
        if batch_size < 1:
            raise ValueError(f"VQAScore batch_size must be >= 1, got {batch_size}")
        _check_template(question, "question")
        _check_template(answer, "answer")
        if not answer.format(prompt="a prompt").strip():
            raise ValueError("VQAScore answer template is empty")
        self.model, self.processor, self.device = model, processor, torch.device(device)
        self.question, self.answer, self.batch_size = question, answer, batch_size
        self.tokenizer = processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids("<image>")
        self.num_query_tokens = model.config.num_query_tokens
        self.start_id = model.config.text_config.decoder_start_token_id

    # ------------------------------------------------------------------ texts

    def question_text(self, prompt: str) -> str:
        """The text the T5 encoder reads after the image: 'Question: Does this figure show ...'."""
        return BLIP_PROMPT.format(question=self.question.format(prompt=prompt))

    def answer_text(self, prompt: str) -> str:
        return self.answer.format(prompt=prompt)

    def input_ids(self, prompt: str) -> list[int]:
        """[<image> x num_query_tokens] + tokens of the question (with </s>), as Blip2Processor builds them."""
        return [self.image_token_id] * self.num_query_tokens + self.tokenizer(self.question_text(prompt)).input_ids

    def label_ids(self, prompt: str) -> list[int]:
        """The answer's tokens and </s>: the labels t2v_metrics scores."""
        return self.tokenizer(self.answer_text(prompt)).input_ids

    # ------------------------------------------------------------------ scores

    def _pixel_values(self, images) -> torch.Tensor:
        rgb = [image.convert("RGB") for image in images]
        pixels = self.processor.image_processor(images=rgb, return_tensors="pt").pixel_values
        return pixels.to(self.device, self.model.dtype)

    @torch.no_grad()
    def _score_batch(self, images, input_ids: list[int], labels: list[int]) -> np.ndarray:
        rows = len(images)
        pixels = self._pixel_values(images)
        features = self.model.get_image_features(pixel_values=pixels, return_dict=True).pooler_output
        ids = torch.tensor([input_ids] * rows, dtype=torch.long, device=self.device)
        embeds = self.model.get_input_embeddings()(ids)
        placeholder = (ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        embeds = embeds.masked_scatter(placeholder, features.to(embeds.dtype))
        target = torch.tensor([labels] * rows, dtype=torch.long, device=self.device)
        start = torch.full((rows, 1), self.start_id, dtype=torch.long, device=self.device)
        logits = self.model.language_model(
            inputs_embeds=embeds, attention_mask=torch.ones_like(ids),
            decoder_input_ids=torch.cat([start, target[:, :-1]], dim=1),  # teacher forcing (T5's shift right)
        ).logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays
        logp = torch.log_softmax(logits, dim=-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)
        # exp(-mean cross-entropy) over the answer's tokens, </s> included
        return torch.exp(logp.mean(dim=1)).double().cpu().numpy()

    def score(self, images: list, prompt: str) -> np.ndarray:
        """VQAScore of each PIL image for `prompt`: float64 in [0, 1], one per image."""
        images = list(images)
        if not images:
            return np.zeros(0, dtype=np.float64)
        input_ids, labels = self.input_ids(prompt), self.label_ids(prompt)
        parts = [self._score_batch(images[start : start + self.batch_size], input_ids, labels)
                 for start in range(0, len(images), self.batch_size)]
        return np.clip(np.concatenate(parts), 0.0, 1.0)


def load_vqascore(model: str, *, device=None, question: str = QUESTION, answer: str = ANSWER,
                  batch_size: int = 16) -> VQAScoreScorer:
    """A VQAScoreScorer on the BLIP-2 flan-T5 checkpoint `model` (hub id or local directory;
    Salesforce/blip2-flan-t5-xxl, or the tiny one of agfsync.demo.tiny_models)."""
    from agfsync.models.loaders import load_blip2

    blip2, processor, device = load_blip2(model, device=device)
    return VQAScoreScorer(blip2, processor, device, question=question, answer=answer, batch_size=batch_size)
