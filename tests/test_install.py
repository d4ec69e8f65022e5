"""The install is pinned and the README's commands are what CI runs."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import yaml
from conftest import REPO


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonical(name)] = version.strip()
    return pins


def direct_dependencies() -> list[str]:
    """The package's requirements and those of its extras (make installs test and, on Linux
    x86_64, xformers)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    return [canonical(re.split(r"[<>=!~ \[]", d)[0]) for d in deps]


def test_gpu_only_and_test_packages_are_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = [canonical(re.split(r"[<>=!~ \[]", d)[0]) for d in project["dependencies"]]
    assert not {"xformers", "pytest", "pytest-timeout"} & set(required)
    assert sorted(project["optional-dependencies"]) == ["test", "xformers"]


def test_every_dependency_is_pinned_in_the_lock():
    pins = lock()
    assert [d for d in direct_dependencies() if d not in pins] == []
    assert (pins["torch"], pins["torchvision"], pins["xformers"]) == ("2.10.0", "0.25.0", "0.0.35")


def test_conda_envs_agree_with_the_lock():
    pins = lock()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for path in envs:
        env = yaml.safe_load(path.read_text())
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
        listed = {}
        for requirement in pip:
            name, version = requirement.split("==")
            listed[canonical(name)] = version
        assert {n: v for n, v in listed.items() if pins.get(n) != v} == {}, path.name
        assert sorted(set(direct_dependencies()) - set(listed)) == [], path.name


def test_installed_environment_matches_the_lock():
    pins = lock()
    for name in direct_dependencies():
        assert metadata.version(name) == pins[name], name


def test_readme_quickstart_and_ci_use_the_same_commands():
    readme = (REPO / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"^```(?:bash|sh)?\n(.*?)```", quickstart, flags=re.S | re.M)
    lines = [line for block in commands for line in block.splitlines() if line.strip()]
    assert lines == ["make demo", "make test"]
    ci = (REPO / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_every_cli_command_has_help(capsys):
    import pytest

    from agfsync.cli import build_parser, main

    # every stage of the workflow, through the same run() functions as the rules
    commands = ["check-config", "tiny-models", "prompts", "qa", "candidates", "score", "pairs", "train-cache", "train",
                "eval-prompts", "eval-generate", "eval-score", "eval-reference", "metric", "judge", "report",
                "download", "unlock", "stale", "generate", "world", "eval-reward", "export-pairs", "plan"]
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(subparsers.choices) == sorted(commands)
    for command in [*commands, "world build", "world check"]:
        with pytest.raises(SystemExit) as info:
            main([*command.split(), "--help"])
        assert info.value.code == 0
        assert f"usage: agfsync {command}" in capsys.readouterr().out


def test_license_and_citation_agree_with_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert (REPO / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert (citation["cff-version"], citation["license"], citation["version"]) == ("1.2.0", "Apache-2.0",
                                                                                project["version"])
    paper = citation["references"][0]
    assert paper["title"].startswith("AGFSync: Leveraging AI-Generated Feedback") and paper["year"] == 2025
    assert [a["family-names"] for a in paper["authors"]][:2] == ["An", "Zhu"]


def test_every_rule_says_what_it_does():
    """`snakemake --list-rules` shows a rule's docstring: every rule has one, first in its body."""
    missing = []
    for path in [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines):
            if re.match(r"^\s*(rule|checkpoint) \w+:\s*$", line):
                body = lines[n + 1].strip() if n + 1 < len(lines) else ""
                if not (body.startswith('"""') and body.endswith('"""') and len(body) > 10):
                    missing.append(f"{path.name}:{n + 1}: {line.strip()}")
    assert missing == []
