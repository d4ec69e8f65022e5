"""Typed settings (agfsync.core.sections) against the schema and the shipped configs.

The schema validates files (and Snakemake validates with it); the dataclasses are what the
code reads. These tests prove, field by field, that the two say the same: every key,
every default, every range and every enum.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from agfsync.core.config import SCHEMA_PATH, load_config
from agfsync.core.sections import LLMSettings, ModelSettings, Settings
from agfsync.core.settings import REQUIRED, SettingsError, Undeclared

SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
BOUNDS = {"minimum": "ge", "exclusiveMinimum": "gt", "maximum": "le", "exclusiveMaximum": "lt"}


def _resolve(node: dict) -> dict:
    ref = node.get("$ref")
    return SCHEMA["$defs"][ref.split("/")[-1]] if ref else node


def _walk(cls, node: dict, key: str = ""):
    """(dotted key, field, schema node) for every field of cls and its sections."""
    # `extends:` is a property of a file, resolved away before settings exist (core.config.resolve_config)
    properties = {k: v for k, v in node["properties"].items() if not (k == "extends" and not key)}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(fields) == set(properties), (key or "top level", set(fields) ^ set(properties))
    for name, field in fields.items():
        dotted = f"{key}.{name}" if key else name
        prop = _resolve(properties[name])
        yield dotted, field, prop, name in node.get("required", ())
        sub = field.metadata.get("section") or field.metadata.get("mapping_of")
        if sub is not None:
            inner = _resolve(prop["additionalProperties"]) if field.metadata.get("mapping_of") else prop
            yield from _walk(sub, inner, dotted)


ALL = list(_walk(Settings, SCHEMA))


def test_every_schema_key_is_a_field_and_back():
    assert len(ALL) > 100  # the walk covers the whole tree (its set equality is asserted per section)


@pytest.mark.parametrize("key, field, prop, required", ALL, ids=[a[0] for a in ALL])
def test_default_range_enum_and_reason_agree_with_the_schema(key, field, prop, required):
    assert field.metadata.get("why"), f"{key}: no reason given"
    if field.metadata.get("section") is not None:
        if field.metadata.get("optional"):
            assert not required and "default" not in prop, key
        elif field.metadata.get("section_default") is None:
            assert required and "default" not in prop, key
        else:
            assert prop.get("default") == field.metadata["section_default"], key
        return
    if field.metadata.get("mapping_of") is not None:
        assert required, key
        return
    if "default" in prop:
        default = prop["default"]
        mine = field.default
        assert (list(mine) if isinstance(mine, tuple) else mine) == default, key
        assert type(mine if not isinstance(mine, tuple) else list(mine)) is type(default) or mine is None, key
    else:
        assert field.default is REQUIRED, key
    for schema_word, mine in BOUNDS.items():
        assert prop.get(schema_word) == field.metadata.get(mine), (key, schema_word)
    assert (tuple(prop["enum"]) if "enum" in prop else None) == field.metadata.get("choices"), key


@pytest.mark.parametrize("path", ["config/config.yaml", "config/tiny.yaml"])
def test_shipped_configs_build_and_round_trip_through_json(path, repo):
    cfg = load_config(repo / path)
    settings = Settings.from_dict(cfg)
    assert Settings.from_json(settings.to_json()) == settings
    assert json.loads(settings.to_json()) == json.loads(json.dumps(cfg, sort_keys=True))


def test_paper_values_read_as_attributes(repo):
    settings = Settings.from_dict(load_config(repo / "config/config.yaml"))
    assert settings.candidates.num_per_prompt == 8 and settings.candidates.sigma == 0.1
    assert (settings.scores.weights.vqa, settings.scores.weights.clip, settings.scores.weights.aesthetic) == (
        0.35, 0.55, 0.10)
    assert isinstance(settings.models["sdxl"], ModelSettings)
    assert settings.models["sdxl"].train.lr == 1e-6 and settings.models["sd15"].train.global_batch == 128
    assert settings.train.launch.join_timeout_s == 600
    assert settings.train.adam_betas == (0.9, 0.999)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.candidates.sigma = 0.2


def test_checks_run_when_a_section_is_built_in_code_and_name_the_key():
    with pytest.raises(SettingsError, match=r"key 'concurrency': 0 must be >= 1"):
        LLMSettings(provider="openai", model="m", concurrency=0)
    with pytest.raises(SettingsError, match=r"key 'provider': 'smtp' is not one of openai, file"):
        LLMSettings(provider="smtp", model="m")
    cfg = {"seed": 1, "candidates": {"num_per_prompt": 1, "sigma": 0.1}}
    with pytest.raises(SettingsError, match=r"key 'candidates.num_per_prompt': 1 must be >= 2"):
        Settings.from_dict(cfg, partial=True)
    with pytest.raises(SettingsError, match=r"unknown settings key\(s\): candidates.sigmaa"):
        Settings.from_dict({"candidates": {"num_per_prompt": 8, "sigma": 0.1, "sigmaa": 1}}, partial=True)


def test_a_section_the_stage_did_not_declare_fails_on_first_read_naming_it():
    settings = Settings.from_dict({"seed": 3, "candidates": {"num_per_prompt": 8, "sigma": 0.1}}, partial=True)
    assert settings.candidates.sigma == 0.1 and settings.seed == 3
    assert isinstance(settings.__dict__["scores"], Undeclared)
    with pytest.raises(SettingsError, match=r"settings key 'scores' was read, but this stage did not declare it"):
        settings.scores.weights
    with pytest.raises(SettingsError, match=r"settings key 'cpu_threads' was read, but this stage did not declare it"):
        settings.cpu_threads  # a scalar too: no placeholder ever reaches a computation
    assert "scores" not in settings.to_dict()
