"""Custom Triton GPU kernels for Diffusion-DPO training (rule train_dpo).

One op per file, each with its pure-torch reference beside it (tests and bench/kernels.py
compare against that reference):
- group_norm_silu.py: fused GroupNorm (+ SiLU) forward and backward, NCHW or channels_last,
  fp32/bf16/fp16 activations with fp32 statistics;
- dpo_loss.py: fused Diffusion-DPO loss (per-sample MSEs and the loss in one pass, the
  gradient into the trained predictions in one pass);
- modules.py: the nn.Module wrappers and the UNet swap (state_dict keys unchanged);
- runtime.py: where Triton can run, the `train.kernels` switch, poisoned buffers for tests;
- self_check.py: the trainer's start-up check of every op on its device against float64;
- compile_check.py: ahead-of-time compile of every launched variant for sm_90, no GPU needed.
"""
