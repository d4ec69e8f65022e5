"""Typed settings: one frozen dataclass per config section (pure, no torch).

The config file is YAML, validated against core/schemas/config.schema.yaml (ranges,
enums, which keys exist; Snakemake validates against the same file). After validation it
becomes a tree of frozen dataclasses (agfsync.core.sections) that every function of the
package takes instead of a dict: `settings.candidates.num_per_prompt`, not
`cfg["candidates"]["num_per_prompt"]`.

Each field is declared once, with `opt(default, why, ge=..., choices=...)`: its type (the
annotation), its default, a one-line reason and its check. The check runs when a section is
built (also when built directly in code, e.g. by a test), and names the dotted key.
tests/test_settings.py proves that the schema's defaults, ranges and enums agree with these
declarations, field by field, so the two cannot drift.

A stage's job sees only the sections its rule passes (agfsync.core.dag.stage_config). The
sections it was not given are `Undeclared`: reading one raises at once, naming the stage's
missing declaration, so a function that starts reading a new key fails in the unit tests
(which build the settings of each stage from its declaration), not in a workflow job.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

REQUIRED = dataclasses.MISSING


class SettingsError(ValueError):
    """A value that fails its check, or a key that does not exist; the message names the key."""


def opt(default=REQUIRED, why: str = "", *, ge=None, gt=None, le=None, lt=None, choices=None):
    """A settings field: default (REQUIRED: none), why it is what it is, and its check."""
    meta = {"why": why, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults are not allowed; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


def section(cls, why: str = "", default: dict | None = None, optional: bool = False):
    """A nested section. `default`: the values of a section the config may leave out (as the
    schema's default for it); optional: absent means None; neither: the section is required."""
    meta = {"why": why, "section": cls, "section_default": default, "optional": optional}
    if optional:
        return dataclasses.field(default=None, metadata=meta)
    if default is None:
        return dataclasses.field(default=REQUIRED, metadata=meta)
    return dataclasses.field(default_factory=lambda: cls.from_dict(default), metadata=meta)


class Undeclared:
    """A section the stage did not declare: any attribute read raises SettingsError."""

    def __init__(self, key: str):
        object.__setattr__(self, "_key", key)

    def __getattr__(self, name):
        raise SettingsError(f"settings key {self._key!r} was read, but this stage did not declare it "
                            f"(agfsync.core.dag.DECLARED, the rule's params): declare it there")

    def __getitem__(self, name):
        return self.__getattr__(name)

    def __repr__(self) -> str:
        return f"Undeclared({self._key!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Undeclared) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)


def _check(key: str, value, meta: dict) -> None:
    if value is None or isinstance(value, Undeclared):
        return
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise SettingsError(f"key {key!r}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    for bound, test, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                              ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        limit = meta.get(bound)
        if limit is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not test(value, limit):
                raise SettingsError(f"key {key!r}: {value!r} must be {word} {limit}")


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _thaw(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_thaw(v) for v in value]
    if isinstance(value, (dict, types.MappingProxyType)):
        return {k: _thaw(v) for k, v in value.items() if not isinstance(v, Undeclared)}
    return value


@dataclasses.dataclass(frozen=True)
class Section:
    """Base of every settings section: checks on construction, dict and JSON round trips."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check(self._key(field.name), self.__dict__[field.name], field.metadata)

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if type(value) is Undeclared:
            value.__getattr__(name)  # raises, naming the key
        return value

    # the dotted prefix of this section in the config, set by from_dict (for messages)
    def _key(self, name: str) -> str:
        prefix = object.__getattribute__(self, "__dict__").get("_prefix", "")
        return f"{prefix}.{name}" if prefix else name

    @classmethod
    def from_dict(cls, data: dict, prefix: str = "", partial: bool = False):
        """Build from a (validated) config mapping. partial: every key that is not given
        becomes Undeclared, defaults included (a stage's cut-down config: the validated
        config already holds the defaults of what the stage declared)."""
        if not isinstance(data, dict):
            raise SettingsError(f"key {prefix or 'config'!r}: expected a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            where = f"{prefix}." if prefix else ""
            raise SettingsError(f"unknown settings key(s): {', '.join(where + k for k in unknown)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, field in fields.items():
            key = f"{prefix}.{name}" if prefix else name
            if name not in data:
                if partial:  # not given to this stage: reading it must fail, not fall back to a default
                    values[name] = Undeclared(key)
                elif field.default is REQUIRED and field.default_factory is REQUIRED:
                    raise SettingsError(f"key {key!r} is required")
                continue
            values[name] = _build(hints[name], field, data[name], key, partial)
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_prefix", prefix)
        cls.__init__(obj, **values)
        return obj

    def to_dict(self) -> dict:
        """The config mapping (lists, dicts; sections the stage did not get are left out)."""
        values = self.__dict__
        return {f.name: _thaw(values[f.name]) for f in dataclasses.fields(self)
                if not isinstance(values[f.name], Undeclared)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, partial: bool = True):
        return cls.from_dict(json.loads(text), partial=partial)


def _build(hint, field, value, key: str, partial: bool):
    section_cls = field.metadata.get("section")
    if section_cls is not None and value is None and field.metadata.get("optional"):
        return None
    if section_cls is not None:
        return section_cls.from_dict(value, key, partial)
    mapping_of = field.metadata.get("mapping_of")
    if mapping_of is not None:
        if not isinstance(value, dict):
            raise SettingsError(f"key {key!r}: expected a mapping, got {type(value).__name__}")
        return types.MappingProxyType({name: mapping_of.from_dict(sub, f"{key}.{name}", partial)
                                       for name, sub in value.items()})
    return _freeze(value)


def mapping(cls, why: str = ""):
    """A field holding named sections of one type (models.<name>)."""
    return dataclasses.field(default=REQUIRED, metadata={"why": why, "mapping_of": cls})


def section_fields(cls) -> list[tuple[str, Any]]:
    """(name, field) of a section class, for documentation and the agreement test."""
    return [(f.name, f) for f in dataclasses.fields(cls)]
