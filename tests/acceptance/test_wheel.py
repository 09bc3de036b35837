"""Build the wheel, install it into a fresh virtual environment and import every package
from another directory; the generic folder names must not be importable there.

Dependencies are not downloaded: the fresh venv reaches the test interpreter's
site-packages through a ``.pth`` line (which does not run that directory's own ``.pth``
files, so the editable install of the working tree stays invisible), and the wheel is
installed with ``--no-deps``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import lmforge as lf
import pytest

ROOT = Path(__file__).resolve().parents[2]


def sources() -> list[str]:
    """What a wheel build reads: pyproject, the readme and every package folder it maps."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = sorted(set(config["tool"]["setuptools"]["package-dir"].values()))
    return ["pyproject.toml", "README.md", "LICENSE", *folders]


pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _can_build_offline() -> bool:
    """setuptools >= 70.1 builds wheels on its own; older ones need the wheel package."""
    try:
        major, minor = (int(part) for part in metadata.version("setuptools").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return False
    if (major, minor) >= (70, 1):
        return True
    try:
        metadata.version("wheel")
    except metadata.PackageNotFoundError:
        return False
    return major >= 64


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ folder)."""
    src = tmp_path_factory.mktemp("src")
    for name in sources():
        origin = ROOT / name
        if origin.is_dir():
            shutil.copytree(
                origin, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
            )
        elif origin.exists():
            shutil.copy2(origin, src / name)
    out = tmp_path_factory.mktemp("dist")
    # Offline when this interpreter can build the wheel itself; else pip fetches the build
    # requirements into an isolated environment.
    isolation = ["--no-build-isolation", "--no-index"] if _can_build_offline() else []
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            *isolation,
            "-q",
            "-w",
            str(out),
            str(src),
        ],
        cwd=src,
    )
    wheels = list(out.glob("lmforge-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; returns its python."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=env_dir,
        ).strip()
    )
    (site / "_lmforge_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=env_dir,
    )
    return python


def test_wheel_contents(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"lmforge", f"lmforge-{lf.__version__}.dist-info"}, tops
    for required in (
        "lmforge/__init__.py",
        "lmforge/py.typed",
        "lmforge/adapters/templates/chat_system.jinja",
        "lmforge/lm/__init__.py",
        "lmforge/modules/__init__.py",
        "lmforge/optimizers/__init__.py",
        "lmforge/targets/__init__.py",
        "lmforge/cli/__init__.py",
        "lmforge/cli/main.py",
        "lmforge/targets/templates/monitoring/dashboard.json",
        "lmforge/targets/templates/monitoring/prometheus.yml.j2",
    ):
        assert required in names, required
    assert not any("/tests/" in n or n.startswith("tests/") for n in names)
    entry_points = (
        zipfile.ZipFile(wheel).read(f"lmforge-{lf.__version__}.dist-info/entry_points.txt").decode()
    )
    assert "lmforge = lmforge.cli.main:main" in entry_points


def test_installed_wheel_imports_from_another_directory(installed: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = textwrap.dedent(
        """
        import importlib, json
        import lmforge as lf
        from lmforge.modules import *
        import lmforge.modules, lmforge.optimizers, lmforge.targets, lmforge.cli, lmforge.cli.main
        import lmforge.compat.dspy
        blocked = {}
        for name in ("framework", "modules", "optimizers", "targets", "cli", "compat"):
            try:
                importlib.import_module(name)
                blocked[name] = False
            except ModuleNotFoundError:
                blocked[name] = True
        prompt = lf.ChatAdapter().format(lf.Signature.parse("q -> a"), [], {"q": "hi"})
        print(json.dumps({
            "file": lf.__file__,
            "modules_file": lmforge.modules.__file__,
            "version": lf.__version__,
            "blocked": blocked,
            "template_rendered": "[[ ## q ## ]]" in prompt.messages[-1]["content"],
        }))
        """
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LMFORGE_CACHE_DIR": str(tmp_path / "cache"),
    }
    result = json.loads(run([str(installed), "-c", script], cwd=elsewhere, env=env))
    venv_root = installed.parent.parent
    assert Path(result["file"]).is_relative_to(venv_root), result["file"]
    assert Path(result["modules_file"]).is_relative_to(venv_root), result["modules_file"]
    assert not Path(result["file"]).is_relative_to(ROOT)
    assert result["version"] == lf.__version__
    assert result["blocked"] == dict.fromkeys(
        ("framework", "modules", "optimizers", "targets", "cli", "compat"), True
    )
    assert result["template_rendered"] is True


def test_installed_console_script(installed: Path, tmp_path: Path) -> None:
    script = installed.parent / "lmforge"
    assert script.exists()
    env = {"PATH": f"{installed.parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    out = run([str(script), "--version"], cwd=tmp_path, env=env)
    assert out.strip() == f"lmforge {lf.__version__}"
