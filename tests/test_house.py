"""The package's architecture, as rules a test can check (README, "Layout").

- agfsync.core (and the world's scene, question and oracle modules) is pure: importing every module of it imports no torch (checked in this
  process with an import blocker, so it holds whatever other tests imported before);
- wings import only downwards: core <- llm, models <- train <- stages <- report, demo, world,
  generate_cli, maintenance_cli <- cli
  (function-level imports count too);
- no module of the package is over 400 lines.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import pkgutil
import sys
from pathlib import Path

import agfsync

PACKAGE = Path(agfsync.__file__).resolve().parent
# A wing may import its own modules and those of wings listed for it here.
ALLOWED = {
    "core": set(),
    "llm": {"core"},
    "models": {"core"},
    "train": {"core", "models"},
    "stages": {"core", "llm", "models", "train"},
    "report": {"core"},
    "demo": {"core", "llm", "models", "train", "stages"},
    "world": {"core", "models", "stages"},
    "maintenance_cli": {"core"},  # agfsync unlock, agfsync stale
    "generate_cli": {"core", "stages"},  # agfsync generate
    "reward_cli": {"core"},  # agfsync eval-reward
    "export_cli": {"core", "stages"},  # agfsync export-pairs
    "plan_cli": {"core"},  # agfsync plan
    "cli": {"core", "llm", "models", "train", "stages", "report", "demo", "world", "maintenance_cli", "generate_cli", "reward_cli", "export_cli", "plan_cli"},
}
HEAVY = ("torch", "torchvision", "diffusers", "transformers", "deepspeed", "bitsandbytes", "open_clip", "triton")


class _Blocker(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.attempts: list[str] = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            self.attempts.append(name)
            raise ImportError(f"{name} imported by agfsync.core")
        return None


# The world's pure modules (scene graphs, captions, questions, the oracle, its CLI parser, the writer).
WORLD_PURE = ("grammar", "scenes", "captions", "questions", "oracle", "cli", "writer")


def _pure(name: str) -> bool:
    return name.startswith(("agfsync.core", "agfsync.world"))


def test_every_core_module_imports_without_torch_in_this_process():
    import agfsync.core

    names = [m.name for m in pkgutil.iter_modules(agfsync.core.__path__, "agfsync.core.")]
    assert len(names) >= 18, names
    names += [f"agfsync.world.{name}" for name in WORLD_PURE]
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] in HEAVY or _pure(k)}
    for key in saved:
        del sys.modules[key]
    blocker = _Blocker()
    sys.meta_path.insert(0, blocker)
    try:
        for name in names:
            importlib.import_module(name)
        assert blocker.attempts == []
        assert not [k for k in sys.modules if k.split(".")[0] in HEAVY]
    finally:
        sys.meta_path.remove(blocker)
        for key in [k for k in sys.modules if k.split(".")[0] in HEAVY or _pure(k)]:
            del sys.modules[key]
        sys.modules.update(saved)


def _wing(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "agfsync":
                yield from (f"agfsync.{alias.name}" for alias in node.names)
            elif node.module.startswith("agfsync."):
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("agfsync."))


def test_wings_import_only_downwards():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        wing = _wing(path)
        if wing == "__init__":
            continue
        for module in _imports(path):
            target = module.split(".")[1]
            if target == "__version__" or target == wing:
                continue
            if target not in ALLOWED.get(wing, set()):
                wrong.append(f"{path.relative_to(PACKAGE.parent)} ({wing}) imports {module}")
    assert wrong == []


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE.parent)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
