"""setup.py maps every package folder, so a regular (non-editable) install ships all of them."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_folders() -> dict[str, str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "FOLDERS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no FOLDERS mapping")


def test_every_package_folder_is_mapped():
    folders = set(setup_folders().values())
    packages = {str(p.parent.relative_to(ROOT)) for p in ROOT.rglob("__init__.py")
                if not any(part.startswith(".") or part in ("tests", "build") for part in p.relative_to(ROOT).parts)}
    assert packages == folders, f"unmapped: {sorted(packages - folders)}, stale: {sorted(folders - packages)}"


def test_packaged_configs_resolve():
    from unified_ar.config import packaged_config

    for rel in ("demo/default.yaml", "demo/fast.yaml", "train/unified.yaml", "vq/shapes.yaml", "toklip/shapes.yaml"):
        assert packaged_config(rel).is_file()
