"""The RL layer sits above simulation, evaluation, data and the core: nothing there imports robopolicy.rl."""

import ast
from pathlib import Path

import robopolicy

BELOW_RL = ["sim", "eval", "data", "heads", "nn", "train", "policy.py", "specs.py", "checkpoint.py", "task.py"]


def test_nothing_below_rl_imports_rl():
    root = Path(robopolicy.__file__).parent
    offenders = []
    for part in BELOW_RL:
        for file in ([root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py"))):
            for node in ast.walk(ast.parse(file.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                offenders += [f"{file.relative_to(root)}: {n}" for n in names if n.startswith("robopolicy.rl")]
    assert not offenders, offenders
