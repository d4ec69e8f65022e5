"""YAML loading for config files that refuses a key written twice in one mapping (pure, no torch).

PyYAML's loaders, and Snakemake's, silently keep the last of two equal keys, so a model
listed twice would quietly replace the first; `load_yaml` names the key and both lines.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def dotted(path) -> str:
    from agfsync.core.config import _key

    return _key(path)


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _duplicate_keys(loader: yaml.SafeLoader, node, path: list, seen_nodes: set) -> list[str]:
    """'key 'a.b' is defined twice (lines 3 and 9)' for every mapping key written twice in
    one mapping of the YAML node tree. YAML loaders (PyYAML's, Snakemake's) silently keep the
    last value, so a model listed twice would quietly replace the first. The keys a merge
    (`<<: *anchor`) brings in may be overridden, as YAML intends: only written keys count."""
    if id(node) in seen_nodes:  # an alias: the anchored node was checked where it was defined
        return []
    seen_nodes.add(id(node))
    problems = []
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                problems += _duplicate_keys(loader, value_node, path, seen_nodes)
                continue
            try:
                key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
                hash(key)
            except (yaml.YAMLError, TypeError):
                key = None
            line = key_node.start_mark.line + 1
            if key is not None and key in first:
                problems.append(f"key '{dotted([*path, key])}' is defined twice (lines {first[key]} and {line}); "
                                "YAML would silently keep only the last")
            elif key is not None:
                first[key] = line
            problems += _duplicate_keys(loader, value_node, [*path, key if key is not None else "?"], seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems += _duplicate_keys(loader, item, [*path, i], seen_nodes)
    return problems


def load_yaml(text: str, path: Path):
    """yaml.safe_load, refusing duplicate mapping keys (ConfigError naming the key and both lines)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems = _duplicate_keys(loader, node, [], set())
        if problems:
            lines = "\n".join(f"  - {problem}" for problem in problems)
            from agfsync.core.config import ConfigError

            raise ConfigError(f"{path}: duplicate key(s) ({len(problems)} problem(s)):\n{lines}")
        return loader.construct_document(node)
    finally:
        loader.dispose()
