"""agfsync: AGFSync (An et al., AAAI 2025) as a reproducible Snakemake workflow.

Importing the package is cheap and never imports torch: the workflow's parse step
(`snakemake -n`) imports agfsync.core.config and other pure modules only. Torch-using
modules (models, tiny_models, embeddings) are imported by the jobs that need them.
"""

__version__ = "0.1.0"
