"""Layers look down only: nothing below the distillation loop imports it or the command line."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "hddgeo"
LOWER = ["geometry", "data", "models", "losses.py", "evaluate.py", "coreset.py", "hierarchy.py", "analysis.py",
         "plots.py", "stats.py", "rundir.py", "tables.py", "training.py", "seeds.py", "device.py"]


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PKG.parent).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.module


@pytest.mark.parametrize("part", LOWER)
def test_lower_layers_do_not_import_distill_or_cli(part):
    files = sorted((PKG / part).rglob("*.py")) if (PKG / part).is_dir() else [PKG / part]
    assert files
    for path in files:
        bad = [m for m in _imports(path) if m and (m.startswith("hddgeo.distill") or m.startswith("hddgeo.cli"))]
        assert not bad, f"{path.relative_to(PKG)} imports {bad}"
