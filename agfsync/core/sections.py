"""The config's sections as typed settings (pure, no torch): type, default, reason, check.

One class per section of config/config.yaml; the mechanism (opt, section, checks, JSON round
trip, undeclared sections) is agfsync.core.settings. The defaults here are the schema's
(tests/test_settings.py proves it field by field); config/config.yaml sets the paper's values.
Build them with agfsync.core.config.load_settings or Settings.from_dict(validated_config).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agfsync.core.categories import category_errors
from agfsync.core.settings import REQUIRED, Section, SettingsError, mapping, opt, section


@dataclass(frozen=True)
class LLMSettings(Section):
    provider: str = opt(REQUIRED, 'openai: any OpenAI-compatible endpoint (OpenAI, Gemini, vLLM, Ollama); file: recorded answers; world: the local world writer (agfsync.world.writer) over HTTP', choices=('openai', 'file', 'world'))
    model: str = opt(REQUIRED, 'paper: ChatGPT (GPT-3.5)')
    base_url: str | None = opt(None, 'endpoint root; any OpenAI-compatible server (vLLM: http://host:8000/v1)')
    api_key_env: str | None = opt('OPENAI_API_KEY', 'name of the environment variable with the key')
    responses: str | None = opt(None, 'provider file only; JSONL of recorded responses')
    temperature: float = opt(1.0, 'paper code', ge=0, le=2)
    top_p: float = opt(1.0, 'paper code', gt=0, le=1)
    max_tokens: int = opt(2048, 'room for 20 descriptions of ~26 words', ge=16)
    send_seed: bool = opt(True, 'pass a per-request seed (derived from `seed`) to endpoints that honour it')
    timeout_s: float = opt(60, 'per request as a whole: connect, headers and the full body (a dripping answer is cut)', gt=0)
    max_retries: int = opt(6, 'on 429, 5xx, timeouts and connection errors, with exponential backoff', ge=0)
    backoff_s: float = opt(1.0, 'first backoff; doubles per retry, with jitter', ge=0)
    max_backoff_s: float = opt(60.0, 'cap for one backoff of ours', ge=0)
    max_retry_after_s: float = opt(300, "a server's Retry-After is honoured in full up to this; a longer one fails the item", ge=0)
    concurrency: int = opt(8, 'requests in flight at once', ge=1, le=256)
    max_requests: int = opt(100000, 'budget of HTTP requests per run (retries included); the run stops cleanly past it', ge=1)
    repair_attempts: int = opt(2, 're-asks with the parse error after a bad answer, then the item is skipped', ge=0, le=10)
    retry_failed: bool = opt(False, 'a rerun replays cached permanent failures (4xx; identical outputs, no request);')
    min_yield: float = opt(0.5, 'the stage fails, naming the causes, below this fraction of its target prompts', ge=0, le=1)


@dataclass(frozen=True)
class DedupSettings(Section):
    threshold: float = opt(0.9, 'drop a prompt whose cosine to a kept one in its category is >= this', gt=0, le=1)
    embedder: str = opt('bge', "bge: prompts.dedup.model, as the authors' code; clip: the text tower of scores.clip.model; ngram: hashed character trigrams, no model", choices=('bge', 'clip', 'ngram'))
    model: str = opt('BAAI/bge-large-en-v1.5', "the weights of embedder: bge (the authors'; hub id or local directory)")


@dataclass(frozen=True)
class PromptsSettings(Section):
    per_category: int = opt(REQUIRED, '12 x 3820 = 45,840, the size of the released set (45,834 prompts)', ge=1)
    llm: LLMSettings = section(LLMSettings, 'the endpoint that writes the prompts (paper: ChatGPT)')
    categories: tuple[str, ...] | None = opt(None, 'null = all 12 categories of the paper (agfsync.stages.prompts.CATEGORIES); world runs: world/<name> (agfsync.core.categories.WORLD_CATEGORIES)')
    descriptions_per_request: int = opt(20, "the paper's code asks for ~20 descriptions per call", ge=1, le=100)
    max_requests_per_category: int | None = opt(None, 'null = 3x the requests the target needs (room for duplicates and failures)', ge=1)
    dedup: DedupSettings = section(DedupSettings, 'near-duplicate removal within a category', default={'threshold': 0.9, 'embedder': 'bge', 'model': 'BAAI/bge-large-en-v1.5'})
    exclude_eval_prompts: bool = opt(False, 'drop a written prompt equal (case, spacing and punctuation aside) to a prompt of an enabled evaluation benchmark: held-out prompts stay held out')

    def __post_init__(self):
        super().__post_init__()
        names = self.__dict__["categories"]
        if isinstance(names, tuple) and (errors := category_errors(names, self._key("categories"))):
            raise SettingsError(errors[0])


@dataclass(frozen=True)
class QASettings(Section):
    mode: str = opt(REQUIRED, "yes_no: the paper's code; multiple_choice: TIFA's question style", choices=('yes_no', 'multiple_choice'))
    llm: LLMSettings = section(LLMSettings, 'the endpoint that writes the question/answer pairs (paper: Gemini Pro)')
    min_pairs: int = opt(5, 'prompts with fewer valid pairs are dropped (paper)', ge=1)
    max_pairs: int = opt(20, 'extra pairs beyond this are cut (keeps VQA cost bounded)', ge=1)


@dataclass(frozen=True)
class CandidatesSettings(Section):
    num_per_prompt: int = opt(REQUIRED, 'paper: N = 8', ge=2)
    sigma: float = opt(REQUIRED, 'paper: Gaussian noise N(0, sigma^2 I) on the text embedding', ge=0)
    clean_first: bool = opt(False, "authors' code keeps candidate 0 noise-free; the paper noises all N")
    pooled_noise: str = opt('sigma', "SDXL pooled embedding: sigma (as the tokens) | none | unit (authors' code: sigma 1)", choices=('sigma', 'none', 'unit'))
    shared_latents: bool = opt(False, "authors' bug: every prompt reuses the same N initial latents")
    shard_size: int = opt(64, 'prompts per shard file (717 shards for 45.8k prompts)', ge=1)
    prompts_per_batch: int = opt(1, 'prompts per UNet call (x N candidates x 2 for CFG); raise on big GPUs', ge=1)
    keep_latents: bool = opt(True, 'store the final latents next to the images (training can reuse them)')
    attention: str = opt('sdpa', 'sdpa (PyTorch) | xformers | auto (xformers when it can run)', choices=('sdpa', 'xformers', 'auto'))


@dataclass(frozen=True)
class ScoreWeights(Section):
    vqa: float = opt(REQUIRED, 'paper (the released code used no VQA: clip 0.85, aesthetic 0.15)', ge=0, le=1)
    clip: float = opt(REQUIRED, 'paper', ge=0, le=1)
    aesthetic: float = opt(REQUIRED, 'paper; the three must sum to 1', ge=0, le=1)


@dataclass(frozen=True)
class VQAScoreSettings(Section):
    model: str = opt(REQUIRED, 'paper')
    method: str = opt('fast', 'fast: yes/no logits and choice likelihoods; authors: free generation', choices=('fast', 'authors'))
    choice_likelihood: str = opt('sum', "multiple choice (fast path): a choice's log-likelihood summed over its "
                                 "tokens (favours short choices) or their mean (length-normalised)",
                                 choices=('sum', 'mean'))
    load_in_8bit: bool = opt(False, 'bitsandbytes 8-bit weights (~12 GB instead of ~24 GB in bf16)')
    batch_size: int = opt(64, '(image, question) pairs per language-model call', ge=1)


@dataclass(frozen=True)
class CLIPScoreSettings(Section):
    model: str = opt(REQUIRED, 'paper')
    gamma: float = opt(REQUIRED, 'CLIP score = gamma * cos(image, text), clamped at 0', gt=0)


@dataclass(frozen=True)
class AestheticScoreSettings(Section):
    backbone: str = opt(REQUIRED, 'LAION aesthetic predictor v2 runs on CLIP ViT-L/14')
    head: str = opt(REQUIRED, 'its MLP head (768-1024-128-64-16-1)')


@dataclass(frozen=True)
class ScoresSettings(Section):
    weights: ScoreWeights = section(ScoreWeights, 'the weighted total that ranks the candidates (applied in pairs_select)')
    vqa: VQAScoreSettings = section(VQAScoreSettings, 'VQA score: BLIP-2 answers the prompt\'s questions')
    clip: CLIPScoreSettings = section(CLIPScoreSettings, 'CLIP score of image and prompt')
    aesthetic: AestheticScoreSettings = section(AestheticScoreSettings, 'LAION aesthetic predictor v2')


@dataclass(frozen=True)
class PairsSettings(Section):
    min_margin: float = opt(0.0, 'drop prompts whose best-worst total gap is below this (0..100 scale)', ge=0)
    swap: bool = opt(False, 'negative control: train on the worst candidate as the winner and the best as the loser (gold must not rise)')


@dataclass(frozen=True)
class LaunchSettings(Section):
    backend: str = opt('auto', 'auto: nccl on GPUs, gloo on CPU | nccl | gloo', choices=('auto', 'nccl', 'gloo'))
    rendezvous_port: int | None = opt(None, 'null: 29500 + SLURM_JOB_ID % 10000 (MASTER_PORT if set); the host is the first node', ge=1024, le=65535)
    join_timeout_s: int = opt(600, 'a node that has not joined by then fails the job with a clear error', ge=1)


@dataclass(frozen=True)
class WandbSettings(Section):
    enabled: bool = opt(False, 'also log the curves to Weights & Biases (pip install wandb; not a dependency); the API key only from WANDB_API_KEY')
    mode: str = opt('offline', 'offline: run files under <checkpoints>/wandb, uploaded later with `wandb sync` | online (needs WANDB_API_KEY)', choices=('offline', 'online'))
    project: str = opt('agfsync', 'W&B project')
    name: str | None = opt(None, 'run name; null: <model>-<output directory name>')


@dataclass(frozen=True)
class TrackingSettings(Section):
    tensorboard: bool = opt(True, 'event files under <checkpoints>/tensorboard, every step: train/loss, implicit_accuracy, reward_margin, lr, grad_norm, pairs_per_s, eta_s')
    log_every: int = opt(10, 'a progress line (step, loss, accuracy, margin, lr, pairs/s, elapsed, ETA) in the log every N steps', ge=1)
    wandb: WandbSettings = section(WandbSettings, 'Weights & Biases, off by default (agfsync.train.tracking)', default={})


@dataclass(frozen=True)
class TrainSettings(Section):
    gpus: int = opt(1, "GPUs (processes) per node; the global batch stays the paper's whatever this is", ge=1)
    nodes: int = opt(1, '1: torchrun --standalone; > 1: one `srun torchrun` per node (SLURM), c10d rendezvous', ge=1)
    launch: LaunchSettings = section(LaunchSettings, 'how processes start and meet (never changes the result, so no rerun when edited)', default={})
    tracking: TrackingSettings = section(TrackingSettings, 'training curves and progress lines (never changes the result, so no rerun when edited)', default={})
    optimizer: str = opt('adamw8bit', 'bitsandbytes AdamW8bit (released code) | adamw (torch)', choices=('adamw8bit', 'adamw'))
    weight_decay: float = opt(0.01, 'AdamW decoupled weight decay', ge=0)
    adam_betas: tuple[float, ...] = opt((0.9, 0.999), 'AdamW betas')
    lr_schedule: str = opt('cosine', 'released code: cosine decay to 0, no warmup | constant', choices=('constant', 'cosine'))
    zero_stage: int = opt(2, 'DeepSpeed ZeRO stage 0-3 (2: gradients and optimizer states sharded)', ge=0, le=3)
    precision: str = opt('auto', 'auto: bf16 autocast on GPU with fp32 master weights, fp32 on CPU', choices=('auto', 'bf16', 'fp32'))
    grad_clip: float | None = opt(1.0, 'released code: 1.0 (null: off)', gt=0)
    gradient_checkpointing: bool = opt(True, 'recompute activations in backward: SDXL fits at 1024 px')
    checkpoint_every: int = opt(250, 'released code: every 250 steps; a rerun resumes from the latest', ge=1)
    keep_checkpoints: int = opt(2, 'older checkpoints are deleted (SDXL: ~40 GB each with optimizer state)', ge=1)
    max_nonfinite_steps: int = opt(0, 'steps with a non-finite loss that may be skipped before training stops', ge=0)
    lora_rank: int | None = opt(None, 'null: full UNet fine-tune (paper); N: LoRA of rank N on the attention layers', ge=1)
    loss: str = opt('dpo', "dpo: Wallace et al. (paper) | authors: the AGFSync code's unnormalised variant", choices=('dpo', 'authors'))
    noise: str = opt('shared', "shared: one noise draw for winner and loser (Wallace et al., paper) | separate: two draws, as the AGFSync code (loss 'authors' always draws two)", choices=('shared', 'separate'))
    latents: str = opt('generation', 'generation: final latents kept with the candidates | vae: re-encode the images', choices=('generation', 'vae'))
    attention: str = opt('sdpa', 'sdpa | xformers | auto, as candidates.attention', choices=('sdpa', 'xformers', 'auto'))
    kernels: str = opt('auto', 'auto: torch (our Triton kernels made the H200 DPO step slower; bench/README.md) | triton: our kernels (fused GroupNorm+SiLU, DPO loss) on GPU | torch', choices=('auto', 'triton', 'torch'))
    cache_chunk: int = opt(256, 'pairs per file of the latent/text-embedding cache', ge=1)
    snapshots: tuple[float, ...] = opt((), 'fractions of the steps at which the UNet is also saved (agfsync/snapshots/step-N; full UNet each, SDXL ~10 GB) for the proxy-vs-gold trajectory (eval.trajectory); [] none')


@dataclass(frozen=True)
class TinyModelsSettings(Section):
    enabled: bool = opt(False, 'true: build tiny models and point models at them (demo)')
    dir: str = opt('resources/tiny_models', 'where `agfsync tiny-models` writes them')


@dataclass(frozen=True)
class WorldSettings(Section):
    seed: int = opt(0, 'seed of the world models\' training (agfsync world build; docs/world.md)', ge=0)
    models: str = opt('data/world/models', 'the trained world models shipped in the repository (MANIFEST.json)')
    build_dir: str = opt('resources/world/models', 'where the world_build rule writes a rebuild')


@dataclass(frozen=True)
class TIFASettings(Section):
    enabled: bool = opt(True, "TIFA v1.0: tifa, clipscore and aesthetic results (the paper's TIFA table), and proxy (the stage-3 weighted total)")
    text_inputs: str = opt('resources/benchmarks/tifa/tifa_v1.0_text_inputs.json', '4,081 {id, caption}')
    questions: str = opt('resources/benchmarks/tifa/tifa_v1.0_question_answers.json', '~25k questions with choices and element types')
    max_prompts: int | None = opt(None, 'null = all 4,081; N = the first N', ge=1)
    version: str = opt('v1.0', 'recorded in the results')
    gold: str | None = opt(None, "null: none | world: the world's oracle answers every TIFA question on the image (gold.json); only meaningful on the world benchmark (data/world/benchmark/tifa)", choices=('world', None))
    answering: str = opt('tifa', "tifa: the official protocol (tifascore: BLIP-2 generates a free-form answer, beam 5, <= 30 tokens, mapped to the nearest choice by eval.tifa.sbert); choices: ours (yes/no logits, choice likelihood of scores.vqa.choice_likelihood). With tifa the result also says how often the two disagree", choices=('tifa', 'choices'))
    sbert: str = opt('sentence-transformers/all-mpnet-base-v2', "the sentence embedder of answering: tifa (tifascore's; hub id or local directory)")


@dataclass(frozen=True)
class HPSv2Settings(Section):
    enabled: bool = opt(True, 'HPS v2 benchmark: 4 styles x 800 prompts, one image each')
    prompts_dir: str = opt('resources/benchmarks/hpsv2', 'anime.json, concept-art.json, paintings.json, photo.json')
    per_style: int | None = opt(None, 'null = all 800 per style; N = the first N of each style', ge=1)
    version: str = opt('v2.0', 'v2.0 (published numbers: docs/method.md) | v2.1: scales differ, recorded', choices=('v2.0', 'v2.1'))
    model: str = opt('ViT-H-14', 'open_clip architecture of the HPS checkpoint')
    model_config: str | None = opt(None, "only for architectures open_clip does not ship (the demo's tiny one)")
    checkpoint: str = opt('resources/weights/HPS_v2_compressed.pt', 'must match version (HPS_v2.1_compressed.pt for v2.1; the released names are checked)')


@dataclass(frozen=True)
class MJHQSettings(Section):
    enabled: bool = opt(True, 'MJHQ-30K FID, per category and overall')
    meta: str = opt('resources/benchmarks/mjhq/meta_data.json', 'id -> {category, prompt}')
    images: str = opt('resources/benchmarks/mjhq/mjhq30k_imgs.zip', 'reference images, read from the zip as downloaded')
    categories: tuple[str, ...] | None = opt(None, 'null = all 10 categories')
    per_category: int | None = opt(None, 'null = all 3,000 per category; N = the first N ids of each (sorted)', ge=2)
    features: str = opt('inception', "torch-fidelity InceptionV3 pool3 (2048-d), as torchmetrics' FID")
    resize: str = opt('torchmetrics', "images to the network's input: torchmetrics (bilinear, antialiased) | "
                      "torch-fidelity (bilinear as TensorFlow 1.x) | clean-fid (PIL bicubic, float); absolute FIDs "
                      "differ, recorded; which one the published MJHQ numbers used is unknown (docs/method.md)",
                      choices=('torchmetrics', 'torch-fidelity', 'clean-fid'))
    inception_weights: str = opt('resources/weights/weights-inception-2015-12-05-6726825d.pth', 'FID InceptionV3 weights')
    batch_size: int = opt(64, 'images per feature-extractor call', ge=1)


@dataclass(frozen=True)
class TrajectorySettings(Section):
    enabled: bool = opt(False, 'proxy reward and gold accuracy of the base model, each train.snapshots snapshot and the final model (results/{model}/trajectory.json); needs TIFA')
    prompts: int = opt(100, 'the first N prompts of the TIFA benchmark, one image each per point', ge=2)


@dataclass(frozen=True)
class JudgeSettings(Section):
    enabled: bool = opt(False, 'paper: GPT-4V pairwise preferences; needs an OpenAI-compatible vision endpoint')
    benchmark: str = opt('hpsv2', 'whose images are compared (same prompt and seed)', choices=('tifa', 'hpsv2', 'mjhq'))
    max_pairs: int | None = opt(200, "N prompts, taken round robin over the benchmark's groups (100 per HPS style)", ge=1)
    confidence: float = opt(0.95, 'Wilson interval of the win / tie / loss rates', gt=0, lt=1)
    llm: LLMSettings | None = section(LLMSettings, 'the vision chat endpoint; needed when enabled', optional=True)


_BENCH = ('tifa', 'hpsv2', 'mjhq')


@dataclass(frozen=True)
class PickScoreSettings(Section):
    enabled: bool = opt(True, 'PickScore (Kirstain et al. 2023), the standard of DPO papers: logit_scale * cos(image, prompt)')
    benchmark: str = opt('hpsv2', 'whose images are scored', choices=_BENCH)
    model: str = opt('yuvalkirstain/PickScore_v1', 'CLIPModel (CLIP-H fine-tuned on Pick-a-Pic)')
    processor: str = opt('laion/CLIP-ViT-H-14-laion2B-s32B-b79K', "the processor its model card loads")


@dataclass(frozen=True)
class ImageRewardSettings(Section):
    enabled: bool = opt(True, 'ImageReward (Xu et al. 2023): BLIP + MLP head, normalised reward')
    benchmark: str = opt('hpsv2', 'whose images are scored', choices=_BENCH)
    checkpoint: str = opt('resources/weights/ImageReward/ImageReward.pt', 'THUDM/ImageReward ImageReward.pt')
    med_config: str = opt('resources/weights/ImageReward/med_config.json', "THUDM/ImageReward med_config.json (BLIP's text encoder)")
    tokenizer: str = opt('google-bert/bert-base-uncased', "BLIP's tokenizer ([DEC] and [ENC] added as BLIP adds them)")


@dataclass(frozen=True)
class HPSv21Settings(Section):
    enabled: bool = opt(True, 'HPS v2.1 next to eval.hpsv2 (v2.0): same model and protocol, another scale')
    benchmark: str = opt('hpsv2', 'whose images are scored (hpsv2: the chunked per-style aggregation)', choices=_BENCH)
    model: str = opt('ViT-H-14', 'open_clip architecture of the HPS checkpoint')
    model_config: str | None = opt(None, "only for architectures open_clip does not ship (the demo's tiny one)")
    checkpoint: str = opt('resources/weights/HPS_v2.1_compressed.pt', 'xswu/HPSv2 HPS_v2.1_compressed.pt')


@dataclass(frozen=True)
class VQAScoreMetricSettings(Section):
    enabled: bool = opt(True, 'VQAScore (Lin et al. 2024): P(answer | image, question about the prompt)')
    benchmark: str = opt('tifa', 'whose images are scored', choices=_BENCH)
    backend: str = opt('local', 'local: a transformers VLM (model); endpoint: an OpenAI-compatible vision endpoint that returns log-probabilities (llm)', choices=('local', 'endpoint'))
    model: str = opt('Salesforce/blip2-flan-t5-xxl', 'backend local: a BLIP-2 flan-T5 checkpoint (hub id or local directory)')
    question: str = opt('Does this figure show "{prompt}"? Please answer yes or no.', "VQAScore's question ({prompt} filled)")
    answer: str = opt('Yes', 'the answer whose probability is the score')
    batch_size: int = opt(16, 'backend local: images per forward pass', ge=1)
    llm: LLMSettings | None = section(LLMSettings, 'backend endpoint: the vision endpoint (with logprobs)', optional=True)


@dataclass(frozen=True)
class EvalSettings(Section):
    shard_size: int = opt(256, 'prompts per evaluation image shard (TIFA 16, HPS v2 13, MJHQ 118 shards)', ge=1)
    prompts_per_batch: int = opt(4, 'prompts per UNet call (one image each, x2 for CFG)', ge=1)
    tifa: TIFASettings = section(TIFASettings, 'TIFA v1.0', default={'enabled': False})
    hpsv2: HPSv2Settings = section(HPSv2Settings, 'HPS v2 benchmark', default={'enabled': False})
    mjhq: MJHQSettings = section(MJHQSettings, 'MJHQ-30K FID', default={'enabled': False})
    judge: JudgeSettings = section(JudgeSettings, 'VLM judge (the paper\'s GPT-4V comparison)', default={'enabled': False})
    pickscore: PickScoreSettings = section(PickScoreSettings, 'PickScore', default={'enabled': False})
    imagereward: ImageRewardSettings = section(ImageRewardSettings, 'ImageReward', default={'enabled': False})
    hpsv21: HPSv21Settings = section(HPSv21Settings, 'HPS v2.1', default={'enabled': False})
    vqascore: VQAScoreMetricSettings = section(VQAScoreMetricSettings, 'VQAScore', default={'enabled': False})
    trajectory: TrajectorySettings = section(TrajectorySettings, 'proxy vs gold along training (reward-hacking watch)', default={'enabled': False})


@dataclass(frozen=True)
class DownloadsSettings(Section):
    files: tuple[Mapping, ...] = opt((), 'path, url and sha256 (null: recorded on first download) of each file')
    hub_revisions: Mapping[str, str] | None = opt(None, 'hub repository -> the commit it is pinned to (null: none; unpinned repositories are refused unless AGFSYNC_ALLOW_UNPINNED=1)')
    hub_ignore: tuple[str, ...] = opt(('*.ckpt', '*.msgpack', '*.h5', '*.onnx', '*.onnx_data', '*.tflite', '*.ot', '*.pb', '*fp16*', '*non_ema*', '*.md'), 'files of hub repos never loaded')


@dataclass(frozen=True)
class GenerationSettings(Section):
    scheduler: str = opt(REQUIRED, 'sampler of the candidates', choices=('default', 'ddim', 'pndm', 'euler', 'euler_ancestral', 'dpmsolver++'))
    steps: int = opt(REQUIRED, 'denoising steps', ge=1, le=1000)
    guidance_scale: float = opt(REQUIRED, 'classifier-free guidance', ge=0)
    negative_prompt: str = opt('', 'unconditional text of CFG')


@dataclass(frozen=True)
class ModelTrainSettings(Section):
    lr: float = opt(REQUIRED, 'paper: 5e-7 (SD 1.x), 1e-6 (SDXL)', gt=0)
    global_batch: int = opt(REQUIRED, 'pairs per optimizer step, whatever the GPU count (paper: 128 / 64)', ge=1)
    steps: int = opt(REQUIRED, 'optimizer steps (paper: 1,000)', ge=1)
    beta_dpo: float = opt(REQUIRED, 'Diffusion-DPO beta with the 0.5 factor (paper: 5000)', gt=0)
    micro_batch: int = opt(1, 'pairs per GPU per forward; accumulation fills the global batch', ge=1)
    warmup_steps: int = opt(0, 'linear warmup steps (released code: none)', ge=0)


@dataclass(frozen=True)
class ModelSettings(Section):
    family: str = opt(REQUIRED, 'sd1: one CLIP text encoder; sdxl: two, pooled embedding, add_time_ids', choices=('sd1', 'sdxl'))
    pretrained: str = opt(REQUIRED, 'hub id or local diffusers directory')
    resolution: int = opt(REQUIRED, 'image side in pixels (paper: 512 SD 1.x, 1024 SDXL)', ge=8)
    generation: GenerationSettings = section(GenerationSettings, 'sampling of the candidates and evaluation images')
    train: ModelTrainSettings = section(ModelTrainSettings, 'Diffusion-DPO hyperparameters of this model')
    overrides: Mapping[str, Mapping] | None = opt(None, "null: none; sections (train, pairs, scores, candidates) set for this model only (agfsync.core.overrides); its jobs see them merged")
    like: str | None = opt(None, "null: a complete entry; a model whose entry this one starts from (its own keys merged on top)")
    candidates_from: str | None = opt(None, "null: its own candidates; a model whose candidates and scores it reuses (same generation, candidates and scorer settings)")
    revision: str | None = opt(None, 'hub revision (null: the default branch)')
    prediction_type: str = opt('epsilon', 'what the UNet predicts (v_prediction: targets are v)', choices=('epsilon', 'v_prediction'))


@dataclass(frozen=True)
class Settings(Section):
    seed: int = opt(REQUIRED, 'every random draw derives from it plus the identity of the record (paper: 200)', ge=0)
    run_models: tuple[str, ...] = opt(REQUIRED, 'models that rule all builds targets for')
    models: Mapping[str, ModelSettings] = mapping(ModelSettings, 'the text-to-image models, by name (used in paths)')
    prompts: PromptsSettings = section(PromptsSettings, 'stage 1a: LLM-written prompts over the 12 categories')
    qa: QASettings = section(QASettings, 'stage 1b: TIFA-style question/answer pairs per prompt')
    candidates: CandidatesSettings = section(CandidatesSettings, 'stage 2: N candidates per prompt')
    scores: ScoresSettings = section(ScoresSettings, 'stage 3: AI feedback')
    pairs: PairsSettings = section(PairsSettings, 'stage 4: best vs worst candidate')
    train: TrainSettings = section(TrainSettings, 'stage 5: Diffusion-DPO (global part; per-model hyperparameters under models.<name>.train)')
    device: str = opt('auto', 'auto: CUDA when present, else CPU', choices=('auto', 'cuda', 'cpu'))
    cpu_threads: int = opt(2, 'intra-op CPU threads of every model job (torch.set_num_threads) and of each training process; fixed by config, not by --cores, because on a CPU the thread count changes float reductions and so the outputs', ge=1)
    tiny_models: TinyModelsSettings = section(TinyModelsSettings, 'tiny local models instead of real checkpoints (demo)', default={'enabled': False, 'dir': 'resources/tiny_models'})
    run: str | None = opt(None, 'null: outputs in the working directory; NAME: every output (results/, logs/, benchmarks/) under runs/NAME/ of the checkout, or $AGFSYNC_RUNS_DIR/NAME (agfsync.core.runs)')
    llm_cache_dir: str = opt('resources/llm_cache', 'on-disk cache of LLM answers: a rerun sends no request')
    world: WorldSettings = section(WorldSettings, 'the miniature world: procedural scenes, an oracle, trained tiny models', default={'seed': 0, 'models': 'data/world/models', 'build_dir': 'resources/world/models'})
    eval: EvalSettings = section(EvalSettings, 'stage 6: base vs fine-tuned model on the benchmarks (docs/method.md, Evaluation)', default={})
    downloads: DownloadsSettings = section(DownloadsSettings, 'benchmark data and weights fetched by local download rules; hub models are derived from the config', default={'files': []})

