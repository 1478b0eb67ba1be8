"""What a non-editable install ships: configs, viewer assets, the demo sample and weights."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lungmtl"


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_repository_configs_are_the_packaged_ones():
    """``configs/`` (what the README's commands name) and ``lungmtl/configs/`` (what a wheel
    ships) hold the same files: change both, or copy one over the other."""
    top, packaged = REPO / "configs", PACKAGE / "configs"
    names = files_under(top)
    assert names == files_under(packaged), "configs/ and lungmtl/configs/ hold other files"
    _, differ, errors = filecmp.cmpfiles(top, packaged, names, shallow=False)
    assert not differ and not errors, f"configs/ and lungmtl/configs/ differ: {differ + errors}"


@pytest.mark.slow
def test_a_wheel_ships_configs_viewer_sample_and_weights(tmp_path):
    src = tmp_path / "src"  # a clean copy: no stale build/ folder can add or hide files
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "lungmtl", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    wheels = tmp_path / "wheel"
    subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("lungmtl-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())

    def want(folder: str, pattern: str = "*") -> set[str]:
        return {
            f"lungmtl/{folder}/{p.relative_to(PACKAGE / folder).as_posix()}"
            for p in (PACKAGE / folder).rglob(pattern)
            if p.is_file() and "__pycache__" not in p.parts
        }

    configs = want("configs", "*.yaml")
    assert len(configs) >= 10 and "lungmtl/configs/experiments/smoke.yaml" in configs
    assert {"lungmtl/viewer/viewer.js", "lungmtl/viewer/viewer.css"} <= shipped
    sample = want("data/sample")
    assert any(s.endswith("manifest.csv") for s in sample)
    weights = want("weights", "*.pt")  # none until a model is committed
    for group in (configs, sample, weights):
        assert group <= shipped, sorted(group - shipped)

    # Installed from the wheel, outside the repository, the packaged configs are usable: an
    # experiment's ``base: configs/...`` is found in the package.
    site = tmp_path / "site"
    subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
    )
    check = (
        "from importlib.resources import files\n"
        "import lungmtl\n"
        "from lungmtl.config import load_config\n"
        "from lungmtl.experiments.spec import load_experiment\n"
        f"assert lungmtl.__file__.startswith({str(site)!r}), lungmtl.__file__\n"
        "root = files('lungmtl') / 'configs'\n"
        "exp = load_experiment(root / 'experiments' / 'smoke.yaml')\n"
        f"assert str(exp.base).startswith({str(site)!r}), exp.base\n"
        "load_config(root / 'paper-unet.yaml')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", check], check=True, cwd=tmp_path, env=env)


def test_every_lungmtl_import_resolves_including_those_inside_functions():
    """Imports inside functions run only when their branch does: check each one names a real
    module and name (a moved module once left ``from .crf import`` broken in evaluate --crf)."""
    import ast
    import importlib

    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        package = ".".join(parts if parts[-1] == "__init__" else parts[:-1]).removesuffix(
            ".__init__"
        )
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            elif (node.module or "").startswith("lungmtl"):
                module = node.module
            else:
                continue
            try:
                mod = importlib.import_module(module)
            except ImportError as e:
                bad.append(f"{path}:{node.lineno}: {module} ({e})")
                continue
            for alias in node.names:
                if hasattr(mod, alias.name):
                    continue
                try:
                    importlib.import_module(f"{module}.{alias.name}")
                except ImportError:
                    bad.append(f"{path}:{node.lineno}: {module} has no {alias.name}")
    assert not bad, "\n".join(bad)
