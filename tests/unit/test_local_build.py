"""Loading the embedded model with a native llama.cpp build for a CPU with AMX: weight
repacking (which crashes there) is off for the load, and only for such builds."""

from __future__ import annotations

import types
from typing import Any

from lmforge.lm.local_build import builds_for_amx, model_params_for_this_build


def fake_llama_cpp(info: bytes) -> Any:
    """A stand-in for the ``llama_cpp`` package: system info and the params factory."""

    def defaults() -> Any:
        return types.SimpleNamespace(use_extra_bufts=True, n_gpu_layers=0)

    inner = types.SimpleNamespace(llama_model_default_params=defaults)
    return types.SimpleNamespace(llama_print_system_info=lambda: info, llama_cpp=inner)


AMX = b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |"
PORTABLE = b"CPU : SSE3 = 1 | AVX2 = 1 | REPACK = 1 |"


def test_an_amx_build_loads_without_repacking_and_the_factory_is_restored() -> None:
    llama_cpp = fake_llama_cpp(AMX)
    original = llama_cpp.llama_cpp.llama_model_default_params
    assert builds_for_amx(llama_cpp)
    with model_params_for_this_build(llama_cpp) as changed:
        params = llama_cpp.llama_cpp.llama_model_default_params()
        assert changed and params.use_extra_bufts is False
    assert llama_cpp.llama_cpp.llama_model_default_params is original
    assert original().use_extra_bufts is True


def test_a_failed_load_restores_the_factory_too() -> None:
    llama_cpp = fake_llama_cpp(AMX)
    original = llama_cpp.llama_cpp.llama_model_default_params
    try:
        with model_params_for_this_build(llama_cpp):
            raise ValueError("not a GGUF file")
    except ValueError:
        pass
    assert llama_cpp.llama_cpp.llama_model_default_params is original


def test_other_builds_load_as_llama_cpp_chooses() -> None:
    llama_cpp = fake_llama_cpp(PORTABLE)
    original = llama_cpp.llama_cpp.llama_model_default_params
    with model_params_for_this_build(llama_cpp) as changed:
        assert not changed
        assert llama_cpp.llama_cpp.llama_model_default_params is original


def test_a_llama_cpp_that_does_not_describe_its_build_is_left_alone() -> None:
    bare = types.SimpleNamespace(Llama=object)
    assert not builds_for_amx(bare)
    with model_params_for_this_build(bare) as changed:
        assert not changed
