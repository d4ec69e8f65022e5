"""Typed settings back as the config dict, for the functions that still read one.

agfsync.core.benchmarks.load_benchmark takes the config as a dict (the workflow calls it at
parse time with Snakemake's config). The evaluation stage hands it `config_dict(settings)`:
`settings.to_dict()` with its keys sorted at every level, as the workflow's params are
(agfsync.core.dag.canonical), so that it reads the same whether the workflow or `agfsync`
ran the stage.
"""

from __future__ import annotations

from agfsync.core.dag import canonical


def config_dict(settings) -> dict:
    """The declared sections of `settings` (and defaults) as a plain dict, keys sorted."""
    return canonical(settings.to_dict())
