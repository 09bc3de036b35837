"""The vllm target: engine settings (vllm.yaml), LoRA adapters and the memory plan."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmforge.artifact_paths import confined_path
from lmforge.errors import UsageError

from .bundle import dumps
from .memory import MemoryPlan, load_model_config, plan_memory
from .templating import environment

if TYPE_CHECKING:
    from .export import ExportOptions

__all__ = ["VLLM_VERSION", "vllm_files"]

VLLM_VERSION = "0.32.0"


def _lora(
    options: ExportOptions, meta: Mapping[str, Any], artifact: Path
) -> tuple[Path | None, int]:
    path = options.lora
    finetune: Mapping[str, Any] = (
        meta["finetune"] if isinstance(meta.get("finetune"), Mapping) else {}
    )
    if path is None and (found := finetune.get("adapter_path") or meta.get("adapter_path")):
        # A path the artifact records may come from anyone: it must stay in its folder.
        path = confined_path(found, artifact.parent, what="the artifact's adapter_path")
    if path is None:
        return None, 0
    config_path = Path(path) / "adapter_config.json"
    try:
        rank = int(json.loads(config_path.read_text())["r"])
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(
            f"{path} is not a PEFT LoRA adapter folder ({type(exc).__name__}); pass --lora DIR"
        ) from None
    return Path(path), rank


def vllm_files(
    options: ExportOptions,
    context: dict[str, Any],
    files: dict[str, bytes],
    specs: dict[str, dict[str, Any]],
    longest: int,
    engine_model: str,
    artifact: Path,
    meta: Mapping[str, Any],
    notes: list[str],
) -> tuple[dict[str, Any], MemoryPlan | None]:
    if not engine_model:
        raise UsageError(
            "the vllm target needs the model vLLM should load: pass --model HF_ID_OR_PATH"
        )
    served = context["name"]
    mount = options.bundle_mount.rstrip("/")
    if not mount.startswith("/"):
        raise UsageError(
            f"--bundle-mount {options.bundle_mount!r} must be an absolute path other than /: "
            "where vLLM sees the bundle (/bundle by default, or the bundle's own absolute path "
            "to run vllm serve on this machine)"
        )
    context["bundle_mount"] = mount
    lora_path, rank = _lora(options, meta, artifact)
    if lora_path is not None:
        lora_name = f"{served}-lora"
        for item in sorted(lora_path.iterdir()):
            if item.is_file():
                files[f"adapters/{lora_name}/{item.name}"] = item.read_bytes()
        context["lora"] = {
            "name": lora_name,
            "rank": rank,
            "path": f"{mount}/adapters/{lora_name}",
            "mount_dir": f"{mount}/adapters",
        }
    for spec in specs.values():
        spec["served_model"] = context["lora"]["name"] if context["lora"] else served
    model_config = None
    if options.model_config is not None:
        model_config = load_model_config(options.model_config)
    elif (Path(engine_model) / "config.json").is_file():
        model_config = load_model_config(engine_model)
    max_len = options.max_model_len or max(
        512, math.ceil((longest * 1.25 + options.max_tokens) / 256) * 256
    )
    if model_config and model_config.get("max_position_embeddings"):
        max_len = min(max_len, int(model_config["max_position_embeddings"]))
    plan = None
    if model_config is None:
        notes.append(
            "memory plan skipped: pass --model-config PATH/config.json "
            "(no local config for the model)"
        )
    else:
        weights = (
            sum(p.stat().st_size for p in Path(engine_model).glob("*.safetensors")) or None
            if Path(engine_model).is_dir()
            else None
        )
        plan = plan_memory(
            model_config,
            gpu=options.gpu,
            gpu_memory_gib=options.gpu_memory_gib,
            max_model_len=max_len,
            max_num_seqs=options.max_num_seqs,
            dtype=options.dtype,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            weights_bytes=weights,
        )
        if plan.status == "does_not_fit" and not options.skip_memory_check:
            raise UsageError(plan.summary() + " (or pass --skip-memory-check)")
        if plan.status != "fits":
            warnings.warn(plan.summary(), stacklevel=2)
            notes.append(plan.summary())
        files["memory_plan.json"] = dumps(plan.to_json()).encode()
        context["memory_summary"] = (
            f"{plan.needed_bytes / 1024**3:.2f} GiB of {plan.budget_bytes / 1024**3:.2f} GiB: "
            f"{plan.status}"
        )
    kinds = sorted(
        {
            k
            for s in specs.values()
            for k in (s["structured_output"] or {}).get("structured_outputs", {})
        }
        | {
            "response_format"
            for s in specs.values()
            if (s["structured_output"] or {}).get("response_format")
        }
    )
    context.update(
        model=engine_model,
        max_model_len=max_len,
        served_model_name=served,
        max_num_seqs=options.max_num_seqs,
        dtype=options.dtype,
        gpu_memory_utilization=options.gpu_memory_utilization,
        structured_kinds=", ".join(kinds) or "no",
    )
    files["vllm.yaml"] = environment().get_template("vllm.yaml.j2").render(context).encode()
    backend = {
        "kind": "vllm",
        "base_url": "http://127.0.0.1:8000",
        "base_url_env": "LMFORGE_VLLM_URL",
        "api_key_env": "VLLM_API_KEY",
        "served_model": served,
        "max_model_len": max_len,
    }
    return backend, plan
