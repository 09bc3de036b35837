"""``LocalLoRA``: LoRA fine-tuning on this machine with torch + transformers + peft.

Trains on the completion form of the data (prompt tokens masked out of the loss, the
answer followed by the end-of-sequence token), CPU or GPU. Produces, in the work folder:

- ``peft/``: the PEFT adapter (``adapter_config.json``, ``adapter_model.safetensors``),
  loadable with ``peft.PeftModel.from_pretrained`` and servable by vLLM as a LoRA module;
- ``lora.gguf``: the same adapter for llama.cpp, so ``local/...`` runs base + adapter
  (when the tuned model runs on a ``local/`` model);
- ``merged/`` (with ``merge=True``): the base with the adapter merged in;
- ``result.json``: hyperparameters, loss per step, validation loss per epoch, wall time,
  peak memory and the adapter's hash. A rerun with the same data and settings returns it
  without training again.

Needs the ``finetune`` extra (``pip install 'lmforge[finetune]'``).
"""

from __future__ import annotations

import dataclasses
import json
import random
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.artifact import write_json_atomic
from lmforge.errors import UsageError
from lmforge.finetune import TrainingData, TunedModel

from . import _batches
from ._deps import quiet_transformers, require

__all__ = ["LocalLoRA"]

_DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclasses.dataclass
class LocalLoRA:
    """LoRA fine-tuning with peft, on the CPU (or a GPU when ``device`` says so).

    Args:
        base: ``local/...`` (the GGUF is dequantised once into an HF folder in the cache)
            or a Hugging Face model folder.
        runtime: the lmforge model that runs the tuned weights. Defaults to ``base`` for
            ``local/`` bases (base GGUF + GGUF LoRA). For an HF folder, pass a
            ``local/<file.gguf>`` of the same model, or a served model name (e.g.
            ``hosted_vllm/<lora-name>``) whose server loads the PEFT adapter.
        rank, alpha, dropout, target_modules: the LoRA configuration.
        epochs, batch_size, learning_rate, max_steps, max_length: training settings
            (``max_steps`` caps the total; examples longer than ``max_length`` tokens are
            skipped, never truncated, since the deployed prompt is not truncated).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; threads: torch CPU threads.
        merge: also save the merged model; gguf: also write the GGUF LoRA (default: when
            the runtime is a ``local/`` model).
    """

    base: str = "local/gemma-3-270m"
    runtime: str | None = None
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: Sequence[str] = _DEFAULT_TARGETS
    epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 1e-3
    max_steps: int | None = None
    max_length: int = 1024
    device: str = "cpu"
    threads: int | None = 2
    merge: bool = False
    gguf: bool | None = None

    name = "local_lora"

    def __post_init__(self) -> None:
        if self.runtime is None:
            if not self.base.startswith("local/"):
                raise UsageError(
                    f"LocalLoRA(base={self.base!r}) needs runtime=: the model that runs the tuned "
                    "weights (local/<file.gguf> of the same model, or a served LoRA model name)"
                )
            self.runtime = self.base
        for name in ("rank", "alpha", "epochs", "batch_size", "max_length"):
            if int(getattr(self, name)) < 1:
                raise UsageError(f"LocalLoRA {name} must be at least 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UsageError(f"LocalLoRA max_steps must be at least 1, got {self.max_steps}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise UsageError(
                f"LocalLoRA device must be 'cpu', 'cuda' or 'auto', not {self.device!r}"
            )
        self.target_modules = tuple(self.target_modules)

    def base_lm(self) -> lf.LM:
        """The untuned model, as the program will call it (decides the prompt format)."""
        assert self.runtime is not None
        return lf.LM(self.runtime)

    def config(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["target_modules"] = list(self.target_modules)
        return data

    def _wants_gguf(self) -> bool:
        return (
            self.gguf
            if self.gguf is not None
            else bool(self.runtime and self.runtime.startswith("local/"))
        )

    # -- training ----------------------------------------------------------------------

    def train(
        self, data: TrainingData, workdir: Path, *, seed: int = 0, progress: bool = True
    ) -> TunedModel:
        """Train on ``data`` in ``workdir``; a finished run there is reused."""
        workdir = Path(workdir)
        identity = {"data": data.content_hash, "config": self.config(), "seed": seed}
        done = _finished(workdir, identity)
        if done is None:
            done = self._train(data, workdir, identity, seed=seed, progress=progress)
        return self._tuned(workdir, done)

    def _tuned(self, workdir: Path, result: dict[str, Any]) -> TunedModel:
        assert self.runtime is not None
        gguf = workdir / "lora.gguf"
        if self.runtime.startswith("local/") and gguf.is_file():
            lm = lf.LM(self.runtime, lora=gguf)
        else:
            lm = lf.LM(self.runtime)
        return TunedModel(
            lm=lm, base_model=self.base, meta=result["meta"], adapter_dir=workdir / "peft"
        )

    def _train(
        self,
        data: TrainingData,
        workdir: Path,
        identity: dict[str, Any],
        *,
        seed: int,
        progress: bool,
    ) -> dict[str, Any]:
        (torch,) = require("torch", "transformers", "peft", "accelerate", "safetensors")[:1]
        threads = torch.get_num_threads()
        try:
            with quiet_transformers(), warnings.catch_warnings():
                # transformers' deprecation notes about its own internals (peft calls them)
                warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
                return self._run(data, workdir, identity, seed=seed, progress=progress)
        finally:
            torch.set_num_threads(threads)  # the thread limit is for training only

    def _run(
        self,
        data: TrainingData,
        workdir: Path,
        identity: dict[str, Any],
        *,
        seed: int,
        progress: bool,
    ) -> dict[str, Any]:
        torch, transformers, peft = require("torch", "transformers", "peft")
        require("accelerate", "safetensors")
        from lmforge import progress as _progress

        from .hf_base import hf_base_folder

        started = time.perf_counter()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        device = self._device(torch)
        _seed_everything(torch, seed)
        base_dir = hf_base_folder(self.base)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(base_dir))
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(base_dir), dtype=torch.float32
        )
        loaded_s = time.perf_counter() - started
        lora = peft.LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules=list(self.target_modules),
            task_type="CAUSAL_LM",
        )
        try:
            model = peft.get_peft_model(model, lora)
        except ValueError as exc:
            raise UsageError(
                f"LocalLoRA target_modules {list(self.target_modules)}: {exc}"
            ) from None
        model.to(device)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        train, skipped = _batches.encode(tokenizer, data.train, self.max_length)
        validation, _ = _batches.encode(tokenizer, data.validation, self.max_length)
        if not train:
            raise UsageError(
                f"every training example is longer than max_length={self.max_length} tokens; "
                "raise LocalLoRA(max_length=...)"
            )
        per_epoch = -(-len(train) // self.batch_size)
        total = (
            per_epoch * self.epochs
            if self.max_steps is None
            else min(self.max_steps, per_epoch * self.epochs)
        )
        optimizer = torch.optim.AdamW(
            [p for p in model.parameters() if p.requires_grad], lr=self.learning_rate
        )
        rng = random.Random(seed)
        losses: list[float] = []
        validation_losses: list[float] = []
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_started = time.perf_counter()
        for epoch in range(self.epochs):
            if len(losses) >= total:
                break
            order = list(range(len(train)))
            rng.shuffle(order)
            steps = min(per_epoch, total - len(losses))
            with _progress.task(
                f"LoRA epoch {epoch + 1}/{self.epochs}", steps, enabled=progress
            ) as bar:
                model.train()
                for step in range(steps):
                    batch = [
                        train[i]
                        for i in order[step * self.batch_size : (step + 1) * self.batch_size]
                    ]
                    loss = _batches.loss(torch, model, _batches.collate(torch, batch, pad, device))
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(round(float(loss.detach().cpu()), 6))
                    bar.advance(status=f"loss {losses[-1]:.4f}")
            if validation:
                validation_losses.append(
                    _batches.evaluate_loss(torch, model, validation, pad, device, self.batch_size)
                )
        train_s = time.perf_counter() - train_started
        model.eval()
        adapter_dir = workdir / "peft"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        model.save_pretrained(str(adapter_dir))
        (adapter_dir / "README.md").unlink(missing_ok=True)  # peft's boilerplate model card
        if self.merge:
            merged_dir = workdir / "merged"
            model.merge_and_unload().save_pretrained(str(merged_dir), safe_serialization=True)
            tokenizer.save_pretrained(str(merged_dir))
        del model, optimizer
        if self._wants_gguf():
            from .gguf_lora import convert_to_gguf

            convert_to_gguf(adapter_dir, base_dir, workdir / "lora.gguf")
        from lmforge.lm.lora import file_digest

        meta = {
            "finetuner": self.name,
            "base_model": self.base,
            "runtime_model": self.runtime,
            "base_hf_folder": str(base_dir),
            "adapter_sha256": file_digest(adapter_dir),
            "gguf_sha256": file_digest(workdir / "lora.gguf") if self._wants_gguf() else None,
            "rank": self.rank,
            "alpha": self.alpha,
            "target_modules": list(self.target_modules),
            "trainable_parameters": int(trainable),
            "hyperparameters": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "learning_rate": self.learning_rate,
                "max_steps": self.max_steps,
                "max_length": self.max_length,
                "dropout": self.dropout,
                "optimizer": "AdamW",
                "seed": seed,
            },
            "training_data_hash": data.content_hash,
            "examples": {
                "train": len(train),
                "validation": len(validation),
                "skipped_too_long": skipped,
            },
            "steps": len(losses),
            "loss_per_step": losses,
            "validation_loss_per_epoch": validation_losses,
            "device": str(device),
            "threads": self.threads,
            "load_s": round(loaded_s, 2),
            "train_s": round(train_s, 2),
            "wall_s": round(time.perf_counter() - started, 2),
            "peak_memory_mb": _peak_memory_mb(torch, device),
            "versions": _versions(),
        }
        result = {"identity": identity, "meta": meta}
        write_json_atomic(workdir / "result.json", result)
        return result

    def _device(self, torch: Any) -> Any:
        if self.device == "cuda" or (self.device == "auto" and torch.cuda.is_available()):
            if not torch.cuda.is_available():
                raise UsageError(
                    "LocalLoRA(device='cuda') but torch sees no CUDA device; use device='cpu'"
                )
            return torch.device("cuda")
        return torch.device("cpu")


def _finished(workdir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    try:
        result = json.loads((workdir / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(result, dict) or result.get("identity") != json.loads(json.dumps(identity)):
        return None
    if not (workdir / "peft" / "adapter_config.json").is_file():
        return None
    gguf = (result.get("meta") or {}).get("gguf_sha256")
    if gguf and not (workdir / "lora.gguf").is_file():
        return None
    return result


def _seed_everything(torch: Any, seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy

        numpy.random.seed(seed % (2**32))
    except ImportError:
        pass


def _peak_memory_mb(torch: Any, device: Any) -> dict[str, float]:
    peak = {"process_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if sys.platform == "darwin":  # ru_maxrss is in bytes there
        peak["process_rss_mb"] = round(peak["process_rss_mb"] / 1024, 1)
    if getattr(device, "type", "cpu") == "cuda":
        peak["cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("torch", "transformers", "peft"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
