"""Loading a model with the llama.cpp build at hand: native builds for CPUs with AMX crash.

``pip install llama-cpp-python`` compiles llama.cpp for the CPU it runs on. On a CPU with
AMX (Intel Sapphire Rapids and later) that build repacks the weights for AMX at load, and
llama-cpp-python 0.3.36 then dies with a segmentation fault in its first decode (measured:
the embedded model, a native build on a Xeon with ``amx_int8``; a portable build
``CMAKE_ARGS=-DGGML_NATIVE=OFF`` on the same machine works). Loading without the extra
buffer types (``use_extra_bufts = false``, llama.cpp's ``--no-repack``) works with either
build, so models are loaded that way whenever the build reports AMX.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["builds_for_amx", "model_params_for_this_build"]


def builds_for_amx(llama_cpp: Any) -> bool:
    """Whether the installed llama.cpp was built with AMX kernels."""
    system_info = getattr(llama_cpp, "llama_print_system_info", None)
    if system_info is None:  # a version (or stand-in) that does not say
        return False
    info = system_info()
    text = info.decode(errors="replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" in text


@contextlib.contextmanager
def model_params_for_this_build(llama_cpp: Any) -> Iterator[bool]:
    """Within the block, ``llama_cpp.Llama(...)`` loads without weight repacking when the
    build has AMX kernels; yields whether it does. ``Llama`` takes no such argument, so its
    default-parameter factory is wrapped for the block: the caller must hold the lock
    that serialises model loads."""
    module: Any = getattr(llama_cpp, "llama_cpp", None)
    original = getattr(module, "llama_model_default_params", None)
    if (
        original is None
        or not builds_for_amx(llama_cpp)
        or not hasattr(original(), "use_extra_bufts")
    ):
        yield False
        return

    def without_repacking() -> Any:
        params = original()
        params.use_extra_bufts = False
        return params

    module.llama_model_default_params = without_repacking
    try:
        yield True
    finally:
        module.llama_model_default_params = original
