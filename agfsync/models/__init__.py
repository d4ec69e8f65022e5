"""Model loading and the scorers: one file per scorer with its own loader (vqa, clip_score,
aesthetic, hps, fid, text_embed), pipeline loading (loaders) and the attention backend.
Imports agfsync.core only; torch is imported here.
"""
