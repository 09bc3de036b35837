"""Base models for LoRA training: a local HF folder, or a ``local/...`` GGUF dequantised once.

transformers reads a GGUF with ``from_pretrained(dir, gguf_file=...)`` and dequantises it
to float32 (slow: a minute or more for the embedded 270M model, ~3 GB peak). The result is
saved once, without the GGUF quantizer (which refuses training and saving), as a plain HF
folder in ``<lmforge cache dir>/models/hf/<file stem>-<sha12>/``; later runs load that in
seconds. The folder also holds the tokenizer and ``config.json`` that the GGUF LoRA
converter needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lmforge._atomic import atomic_path
from lmforge.errors import UsageError

from ._deps import quiet_transformers, require

__all__ = ["hf_base_folder"]


def hf_base_folder(base: str) -> Path:
    """The HF model folder to train ``base`` from (``local/...`` or a folder path)."""
    if base.startswith("local/"):
        from lmforge.lm.local_models import resolve_model_path

        return _dequantised(resolve_model_path(base))
    folder = Path(base).expanduser()
    if not (folder / "config.json").is_file():
        raise UsageError(
            f"base {base!r} is neither a local/... model nor a Hugging Face model folder "
            "(no config.json in it); pass base='local/gemma-3-270m' or a model folder"
        )
    return folder


def _dequantised(gguf: Path) -> Path:
    from filelock import FileLock
    from lmforge.lm.cache import default_cache_dir
    from lmforge.lm.lora import file_digest

    digest = _gguf_digest(gguf, file_digest)
    target = default_cache_dir() / "models" / "hf" / f"{gguf.stem}-{digest[:12]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock", timeout=1800):
        if (target / "config.json").is_file():
            return target
        sys.stderr.write(f"lmforge: converting {gguf.name} to a trainable model (once)...\n")
        torch, transformers = require("torch", "transformers")
        with atomic_path(target) as staging, quiet_transformers():
            _convert(torch, transformers, gguf, staging)
    return target


def _convert(torch: Any, transformers: Any, gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` to float32 and save it (without the GGUF quantizer) in ``out``."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _gguf_digest(gguf: Path, digest: object) -> str:
    # The packaged model records its verified sha256 next to it; reuse it over re-hashing.
    note = gguf.with_name(gguf.name + ".sha256")
    try:
        import json

        data = json.loads(note.read_text())
        stat = gguf.stat()
        value = data.get("sha256")
        if (
            isinstance(value, str)
            and len(value) == 64
            and data.get("size") == stat.st_size
            and data.get("mtime_ns") == stat.st_mtime_ns
        ):
            return value
    except (OSError, ValueError, AttributeError):
        pass
    return digest(gguf)  # type: ignore[operator,no-any-return]
