"""Config loading and validation (pure: no torch).

One schema, agfsync/core/schemas/config.schema.yaml, serves both the workflow
(workflow/rules/common.smk validates with it at parse time) and the package's own
loader (`load_config`, used by the CLI and the tests). Errors name the config key and
say what was expected; several problems are reported at once. Values of keys that may
hold secrets are never echoed. Stricter than JSON schema alone: NaN and infinities are
rejected anywhere, "integer" means an int (12.0 is not one), and a key written twice in
one YAML mapping is an error naming both lines (also for the files Snakemake was given).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from agfsync.core.categories import category_errors
from agfsync.core.overrides import inherit_models, override_errors
from agfsync.core.rewards import reward_errors
from agfsync.core.yaml_keys import load_yaml

SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

# Keys whose values must never appear in an error message (a user may paste a key there).
_SECRET_HINTS = ("key", "token", "secret", "password")


class ConfigError(ValueError):
    """An invalid config; the message names every offending key."""


@functools.cache
def load_schema() -> dict:
    with SCHEMA_PATH.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def _is_integer(checker, instance) -> bool:
    """JSON schema's "integer", strictly: an int, never a bool nor a float such as 12.0.
    JSON Schema accepts 12.0, which then fails inside a job (`slice indices must be integers`)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


# A number in exponent notation without a dot ("1e-4") or without the exponent's sign
# ("1.0e4"): YAML 1.2 reads a float, PyYAML and Snakemake's loader (YAML 1.1) a string.
_EXPONENT_FLOAT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+")


def _wants_number(subschema: dict) -> bool:
    kind = subschema.get("type")
    return kind == "number" or (isinstance(kind, list) and "number" in kind and "string" not in kind)


def _validator_with_defaults():
    """A JSON Schema 2020-12 validator (the draft of our schemas and of snakemake.utils.validate)
    that fills `default` values of missing properties while validating,
    reads a string such as "1e-4" at a number-valued key as the number YAML 1.2 means, with
    a strict "integer" type (_is_integer)."""
    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
                value = instance.get(name)
                if isinstance(value, str) and _wants_number(subschema) and _EXPONENT_FLOAT.fullmatch(value.strip()):
                    instance[name] = float(value)
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults},
                                        type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer))


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _is_secretish(path) -> bool:
    return any(hint in str(part).lower() for part in path for hint in _SECRET_HINTS)


def _show(value: Any, path) -> str:
    if _is_secretish(path):
        return "<value hidden>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _describe(error: jsonschema.ValidationError) -> str:
    path = list(error.absolute_path)
    key = _key(path)
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        extras = sorted(set(value) - allowed)
        lines = []
        for extra in extras:
            full = _key([*path, extra])
            if any(hint in extra.lower() for hint in _SECRET_HINTS):
                lines.append(
                    f"key '{full}': secrets never go into config files; put the key in an environment "
                    f"variable and name that variable in 'api_key_env'"
                )
            else:
                lines.append(f"unknown key '{full}' (allowed here: {', '.join(sorted(allowed)) or 'none'})")
        return "\n".join(lines)
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"missing required key '{_key([*path, missing])}'"
    if kind == "type":
        types = expected if isinstance(expected, list) else [expected]
        return f"key '{key}': expected {' or '.join(types)}, got {type(value).__name__} {_show(value, path)}"
    if kind == "enum":
        return f"key '{key}': expected one of {', '.join(map(repr, expected))}; got {_show(value, path)}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        return f"key '{key}': must be {op} {expected}, got {_show(value, path)}"
    if kind == "multipleOf":
        return f"key '{key}': must be a multiple of {expected}, got {_show(value, path)}"
    if kind in ("minItems", "maxItems"):
        return f"key '{key}': must have {'at least' if kind == 'minItems' else 'at most'} {expected} item(s)"
    if kind == "uniqueItems":
        return f"key '{key}': items must be unique, got {_show(value, path)}"
    if kind == "minLength":
        return f"key '{key}': must be a non-empty string"
    if kind == "minProperties":
        return f"key '{key}': must define at least {expected} entry"
    if kind == "pattern":
        if error.schema_path and "propertyNames" in error.schema_path:
            return f"key '{key}': name {value!r} must match {expected} (lowercase letters, digits, _)"
        return f"key '{key}': {_show(value, path)} must match the pattern {expected}"
    if kind == "anyOf" and path and path[-1] == "api_key_env":
        return (
            f"key '{key}': expected the NAME of an environment variable (letters, digits, _) or null; "
            "the value is hidden because it may be a key"
        )
    return f"key '{key}': {error.message if not _is_secretish(path) else 'invalid value (hidden)'}"


def _bad_values(value, path: list) -> list[tuple[list, float | str]]:
    """(path, value) of every NaN or infinity anywhere in the config (YAML's .nan, .inf, -.inf),
    and of every string holding a lone surrogate (YAML's "\\ud800" escape: not Unicode)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, value)]
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [(path, value)]
        return []
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _bad_values(item, [*path, key])]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _bad_values(item, [*path, i])]
    return []


def _semantic_errors(cfg: dict) -> list[str]:
    """Checks that a JSON schema cannot express."""

    errors = []
    models = cfg.get("models", {})
    for i, name in enumerate(cfg.get("run_models", [])):
        if name not in models:
            errors.append(
                f"key 'run_models[{i}]': {name!r} is not defined under 'models' (defined: {', '.join(models)})"
            )
    weights = cfg.get("scores", {}).get("weights", {})
    if weights and not math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6):
        errors.append(f"key 'scores.weights': weights must sum to 1, got {sum(weights.values()):g}")
    for dotted, llm in llm_sections(cfg):
        if llm.get("provider") == "file" and not llm.get("responses"):
            errors.append(f"key '{dotted}.responses': provider 'file' needs the path of a JSONL of responses")
    evaluation = cfg.get("eval", {})
    judge = evaluation.get("judge", {})
    if judge.get("enabled") and "llm" not in judge:
        errors.append("key 'eval.judge.llm': the judge is enabled but has no llm section (a vision model endpoint)")
    if judge.get("enabled") and not evaluation.get(judge.get("benchmark"), {}).get("enabled"):
        errors.append(f"key 'eval.judge.benchmark': the judge compares images of {judge.get('benchmark')!r}, "
                      f"which is not enabled (eval.{judge.get('benchmark')}.enabled)")
    tifa = evaluation.get("tifa", {})
    if tifa.get("gold") and not tifa.get("enabled"):
        errors.append(f"key 'eval.tifa.gold': {tifa['gold']!r} reads the TIFA images, but TIFA is not enabled "
                      "(eval.tifa.enabled)")
    if evaluation.get("trajectory", {}).get("enabled") and not tifa.get("enabled"):
        errors.append("key 'eval.trajectory.enabled': the trajectory evaluates the TIFA prompts, but TIFA is not "
                      "enabled (eval.tifa.enabled)")
    paths = [entry.get("path") for entry in cfg.get("downloads", {}).get("files", [])]
    for i, path in enumerate(paths):
        if paths.index(path) != i:
            errors.append(f"key 'downloads.files[{i}].path': {path!r} is listed twice")
    qa = cfg.get("qa", {})
    if qa.get("max_pairs", 0) < qa.get("min_pairs", 0):
        errors.append(f"key 'qa.max_pairs': must be >= qa.min_pairs ({qa['min_pairs']}), got {qa['max_pairs']}")
    errors += category_errors(cfg.get("prompts", {}).get("categories") or [])
    return errors + reward_errors(cfg) + override_errors(cfg, load_schema(), _validator_with_defaults())


def check_config(cfg: dict, source: str = "config") -> dict:
    """Validate `cfg` in place (filling defaults) and return it; raise ConfigError naming each bad key."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{source}: the config must be a mapping of keys to values, got {type(cfg).__name__}")
    # Non-finite numbers first: JSON schema's bounds let NaN through (every comparison with it
    # is false), and a NaN or infinity is never a meaningful setting; so are strings that are not
    # Unicode. Schema errors at the same keys would only repeat the problem.
    messages = inherit_models(cfg)  # models.<name>.like first: the schema sees whole entries
    bad_values = _bad_values(cfg, [])
    messages += [f"key '{_key(path)}': must be a finite number, got {_show(value, path)}" if isinstance(value, float)
                else f"key '{_key(path)}': a string holds a lone surrogate escape (\\ud800-\\udfff), which is not "
                "valid Unicode" for path, value in bad_values]
    bad_paths = [path for path, _ in bad_values]
    validator = _validator_with_defaults()(load_schema())
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    messages += [_describe(error) for error in errors if list(error.absolute_path) not in bad_paths]
    if not messages:
        messages = _semantic_errors(cfg)
    if messages:
        lines = "\n".join(f"  - {line}" for message in messages for line in message.splitlines())
        raise ConfigError(f"{source}: invalid config ({len(messages)} problem(s)):\n{lines}")
    return cfg


# Operational settings change how a job runs, never what it writes. Rules leave them out of
# their params, so that tuning them does not make Snakemake rerun a stage and everything
# downstream of it; the jobs read them back from the full config with `with_operational`.
# First the LLM settings that change how answers are fetched, never what they are (the
# response cache key ignores them too).
LLM_OPERATIONAL_KEYS = (
    "concurrency", "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "max_requests", "retry_failed",
    "max_retry_after_s", "min_yield",
)
# Where LLM sections live (dotted paths): the two prompt stages, the VLM judge and VQAScore's endpoint.
LLM_SECTIONS = ("prompts.llm", "qa.llm", "eval.judge.llm", "eval.vqascore.llm")


def llm_sections(cfg: dict):
    for dotted in LLM_SECTIONS:
        node, key = _parent(cfg, dotted)
        if isinstance(node, dict) and isinstance(node.get(key), dict):
            yield dotted, node[key]


# Whole sections that are operational in the same sense: how training processes start
# and find each other (launcher, backend, rendezvous port and timeout), and what the trainer
# reports while it runs (TensorBoard, W&B, progress lines).
OPERATIONAL_SECTIONS = ("train.launch", "train.tracking")


def _parent(cfg: dict, dotted: str):
    """(parent dict, last key) of a dotted path, or (None, key) when the parent is absent."""
    *path, last = dotted.split(".")
    node = cfg
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), last


def without_operational(stage_cfg: dict) -> dict:
    out = copy.deepcopy(stage_cfg)
    for _, llm in llm_sections(out):
        for key in LLM_OPERATIONAL_KEYS:
            llm.pop(key, None)
    for dotted in OPERATIONAL_SECTIONS:
        parent, key = _parent(out, dotted)
        if parent is not None:
            parent.pop(key, None)
    for entry in (out.get("models") or {}).values():  # models.<name>.like: resolved on load, never an output's
        entry.pop("like", None) if isinstance(entry, dict) else None
    out.pop("run", None)  # where a run writes (agfsync.core.runs), never what
    return out


def with_operational(stage_cfg: dict, full_cfg: dict) -> dict:
    out = copy.deepcopy(stage_cfg)
    sources = dict(llm_sections(full_cfg))
    for dotted, llm in llm_sections(out):
        source = sources[dotted]
        llm.update({key: source[key] for key in LLM_OPERATIONAL_KEYS if key in source})
    for dotted in OPERATIONAL_SECTIONS:
        parent, key = _parent(out, dotted)
        source, _ = _parent(full_cfg, dotted)
        if parent is not None and source is not None and key in source:
            parent[key] = copy.deepcopy(source[key])
    return out


DEFAULT_CONFIG = "config/config.yaml"


def merge_config(base: dict, override: dict) -> dict:
    """`override` over `base`: mappings merge key by key, anything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def resolve_config(cfg: dict, source: str = "config", _seen: tuple = ()) -> dict:
    """The whole config a file (or Snakemake's --configfile/--config) stands for.

    A config file overrides the one its top-level `extends:` names, key by key; without
    the key it extends config/config.yaml, and `extends: null` marks a complete config
    (config/config.yaml, config/demo.yaml and config/tiny.yaml are). An empty config is config/config.yaml.
    The workflow resolves this itself instead of using Snakemake's `configfile:` and
    `--replace-workflow-config`, because Snakemake does not pass that flag on to the jobs
    it submits to a cluster: they would see a different config than the main process."""
    if not cfg:
        cfg = {"extends": DEFAULT_CONFIG}
    cfg = dict(cfg)
    base_path = cfg.pop("extends", DEFAULT_CONFIG)
    if base_path is None:
        return cfg
    if not isinstance(base_path, str) or not base_path:
        raise ConfigError(f"{source}: key 'extends': expected the path of a config file or null, got {base_path!r}")
    if base_path in _seen:
        raise ConfigError(f"{source}: key 'extends': {' -> '.join((*_seen, base_path))} is a cycle")
    base = read_yaml_config(locate_config(base_path))
    return merge_config(resolve_config(base, base_path, (*_seen, base_path)), cfg)


# The checkout this package runs from (an editable install): config files named relative to
# it are found from any working directory, so `snakemake --directory RUN` works.
REPO_ROOT = Path(__file__).resolve().parents[2]


def locate_config(path: str | os.PathLike) -> Path:
    """A config file named relative to the working directory, else relative to the checkout."""
    path = Path(path)
    if path.is_absolute() or path.exists() or not (REPO_ROOT / path).is_file():
        return path
    return REPO_ROOT / path


def read_yaml_config(path: str | os.PathLike) -> dict:
    """A config file's mapping, unvalidated; errors name the file (and line): not UTF-8, not
    YAML, a key written twice in one mapping."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}, line {line}: not valid UTF-8 (byte {err.start} of the file: "
                          f"{data[err.start:err.start + 4]!r})") from None
    try:
        cfg = load_yaml(text, path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if cfg is None:
        raise ConfigError(f"{path}: the config file is empty")
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: the config must be a mapping of keys to values, got {type(cfg).__name__}")
    return cfg


def check_config_files(paths) -> None:
    """Read each config file with read_yaml_config, for its errors only: the workflow calls
    this on the files Snakemake was given (--configfile), which Snakemake itself loads with a
    YAML loader that silently keeps the last of two equal keys."""
    for path in paths:
        read_yaml_config(path)


def load_config(path: str | os.PathLike) -> dict:
    """Read a YAML config file (over the config it extends), validate it and fill defaults."""
    return check_config(resolve_config(read_yaml_config(path), str(path), (str(path),)), source=str(path))


def config_digest(cfg: dict, model: str | None = None) -> str:
    """Short hash of everything in a config that can change an output (LLM fetch settings
    left out), recorded in every result file. With `model`: of that model's results only
    (the other models' settings left out), so retuning one model leaves the others' alone."""
    if model is not None:
        cfg = {**{k: v for k, v in cfg.items() if k not in ("models", "run_models")}, "models": {model: cfg["models"][model]}}
    text = json.dumps(without_operational(cfg), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
