"""Security rules, checked on the source of every module in nlpipe/ (by syntax tree, not by grep, so a
usage example inside a string — the model card tells users how to load with trust_remote_code —
is not a call):

- nothing is unpickled: every ``torch.load`` passes ``weights_only=True``; no pickle-family imports;
- weights are written as safetensors only: no ``safe_serialization=False``;
- nlpipe never enables ``trust_remote_code`` on the user's behalf.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nlpipe"
SOURCES = sorted(PACKAGE.rglob("*.py"))
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def violations(source: str, filename: str) -> list[str]:
    """Every rule broken in one module's source, as ``file:line: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: imports {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
            if name == "load" and owner == "torch" and not _is_true(_keyword(node, "weights_only")):
                found.append(f"{where}: torch.load without weights_only=True")
            if _is_true(_keyword(node, "trust_remote_code")):
                found.append(f"{where}: passes trust_remote_code=True")
            safe = _keyword(node, "safe_serialization")
            if isinstance(safe, ast.Constant) and safe.value is False:
                found.append(f"{where}: safe_serialization=False (weights must be safetensors)")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_follows_security_rules(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE))) == []


def test_checker_catches_each_rule() -> None:
    bad = (
        "import pickle\nfrom dill import loads\nimport torch\n"
        "torch.load('x.pt')\ntorch.load('x.pt', weights_only=False)\n"
        "AutoModel.from_pretrained('m', trust_remote_code=True)\nm.save_pretrained('d', safe_serialization=False)\n"
    )
    found = violations(bad, "bad.py")
    assert [f.split(":")[1] for f in found] == ["1", "2", "4", "5", "6", "7"]
    good = "import torch\ntorch.load('x.pt', weights_only=True)\ntext = 'from_pretrained(m, trust_remote_code=True)'\n"
    assert violations(good, "good.py") == []
