"""Stage 5, Diffusion-DPO training: its own process (torchrun), so its own wing.

  trainer.py      DPOTrainer: the micro-step, non-finite guards, the loop, the outputs, `main`
  build.py        the trainer's build steps (backend, distributed, batch arithmetic, UNet,
                  LoRA or reference, attention, kernels, DeepSpeed), each a named function
  resume.py       the run's identity, checkpoint save/resume, metrics trimming
  checkpoints.py  checkpoints on disk: safe loading, completeness manifests, pruning
  data.py         the pair cache (latents and text embeddings) and the batch order
  engine.py       the only module that touches DeepSpeed and bitsandbytes
  loss.py         the Diffusion-DPO loss (and the authors' variant)
  launch.py       torchrun / srun torchrun, process lifetime, the checkpoint lock
  kernels/        Triton kernels (fused GroupNorm+SiLU, fused DPO loss) and the UNet swap

Imports agfsync.core and agfsync.models.
"""
