"""PEFT adapter folder -> GGUF LoRA file, with llama.cpp's ``convert_lora_to_gguf.py``.

The converter ships inside the llama-cpp-python *source* package (``vendor/llama.cpp``),
not in its wheel. It is found, in order:

1. ``$LMFORGE_LLAMA_CPP_DIR`` (a llama.cpp checkout holding ``convert_lora_to_gguf.py``);
2. ``<lmforge cache dir>/tools/llama.cpp-<llama-cpp-python version>/``, extracted earlier;
3. otherwise the matching source package is fetched once with
   ``pip download --no-deps --no-binary :all: llama-cpp-python==<version>`` (pip's own
   cache and index settings apply) and only the converter's files are extracted to (2).

The converter runs in a child process (it configures logging and ``sys.path`` for itself).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from lmforge._atomic import atomic_path
from lmforge.errors import LMForgeError, UsageError

__all__ = ["convert_to_gguf", "converter_script"]

_SCRIPT = "convert_lora_to_gguf.py"
# What the converter imports from its own tree: the HF converter, its per-architecture
# modules and the bundled gguf-py matching it.
_MEMBERS = ("convert_lora_to_gguf.py", "convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def _llama_cpp_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        from lmforge.errors import MissingExtraError

        raise MissingExtraError(
            "llama-cpp-python", "local", "Converting a LoRA adapter for local/... models"
        ) from None


def converter_script() -> Path:
    """The path of ``convert_lora_to_gguf.py`` (fetched and extracted on first use)."""
    env = os.environ.get("LMFORGE_LLAMA_CPP_DIR")
    if env:
        script = Path(env).expanduser() / _SCRIPT
        if not script.is_file():
            raise UsageError(
                f"$LMFORGE_LLAMA_CPP_DIR={env} has no {_SCRIPT}; point it at a llama.cpp checkout"
            )
        return script
    from filelock import FileLock
    from lmforge.lm.cache import default_cache_dir

    version = _llama_cpp_version()
    folder = default_cache_dir() / "tools" / f"llama.cpp-{version}"
    script = folder / _SCRIPT
    if script.is_file():
        return script
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=1800):
        if not script.is_file():
            _fetch(version, folder)
    return script


def _fetch(version: str, folder: Path) -> None:
    sys.stderr.write(
        f"lmforge: fetching llama.cpp's LoRA converter (llama-cpp-python {version} source)...\n"
    )
    with tempfile.TemporaryDirectory(prefix="lmforge-llama-src-") as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
            "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", tmp,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        archives = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no archive"]
            raise LMForgeError(
                f"could not fetch the llama-cpp-python {version} source for its LoRA converter "
                f"({detail[0]}); set $LMFORGE_LLAMA_CPP_DIR to a llama.cpp checkout"
            )
        with atomic_path(folder) as staging:
            _extract(archives[0], staging)
            if not (staging / _SCRIPT).is_file():
                raise LMForgeError(f"{archives[0].name} has no vendor/llama.cpp/{_SCRIPT}")


def _extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            _, sep, rest = member.name.partition("/vendor/llama.cpp/")
            if not sep or not (member.isfile() or member.isdir()):
                continue
            if not any(rest == m or (m.endswith("/") and rest.startswith(m)) for m in _MEMBERS):
                continue
            member.name = rest
            tar.extract(member, target, filter="data")


def convert_to_gguf(adapter_dir: Path, base_dir: Path, out_file: Path) -> Path:
    """Convert the PEFT adapter in ``adapter_dir`` (trained on the HF model in
    ``base_dir``) into a float32 GGUF LoRA at ``out_file``."""
    script = converter_script()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with atomic_path(out_file) as tmp:
        command = [
            sys.executable, str(script), "--base", str(base_dir), "--outfile", str(tmp),
            "--outtype", "f32", str(adapter_dir),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not tmp.is_file():
            lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
            raise LMForgeError(
                f"converting the LoRA adapter to GGUF failed "
                f"({lines[-1] if lines else 'no output'}); "
                f"the PEFT adapter is still usable at {adapter_dir}"
            )
    return out_file
