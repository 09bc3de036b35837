"""``export_bundle``: turn a compiled artifact into a served bundle (vllm or managed target)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import posixpath
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lmforge as lf
from lmforge import __version__
from lmforge.artifact import read_artifact
from lmforge.artifact_paths import confined_path
from lmforge.errors import UsageError
from lmforge.jsonlimits import TooDeepError, loads_bounded
from lmforge.lm.lm import DEFAULT_LOCAL_MODEL, is_secret_key
from lmforge.lm.profiles import profile_for

from .backends import constraint_to_structured
from .bundle import dumps, manifest_for, write_bundle
from .config import ServerConfig
from .drift import reference_stats
from .managed_target import managed_backend
from .memory import DTYPE_BYTES, MemoryPlan
from .program import build_models, program_signature, required_extras
from .request_log import RequestLogSettings
from .templating import environment, k8s_name, monitoring_files
from .vllm_target import VLLM_VERSION, vllm_files

__all__ = ["VLLM_VERSION", "ExportOptions", "ExportResult", "export_bundle"]

HF_EQUIVALENTS = {DEFAULT_LOCAL_MODEL: "google/gemma-3-270m"}
# Program-server replicas in k8s/program.yaml (the README shows what they do to the limits).
PROGRAM_REPLICAS = 2


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """Export settings (CLI flags of ``lmforge export``)."""

    target: Literal["vllm", "managed", "mlflow"] = "vllm"
    name: str | None = None
    model: str | None = None
    max_tokens: int = 256
    max_num_seqs: int = 16
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    gpu: str | None = None
    gpu_memory_gib: float | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "bfloat16"
    model_config: Path | None = None
    lora: Path | None = None
    bundle_mount: str = "/bundle"
    reference_data: Path | None = None
    skip_memory_check: bool = False
    api_key_env: str | None = None
    fallback_model: str | None = None
    image: str | None = None
    trusted_modules: tuple[str, ...] = ()  # what the artifact may import (lf.load's)
    answer_metadata: bool = False  # answer {answer, confidence, light} (serving.json answers)
    withhold: str | None = None  # "red" / "yellow": hold back answers of that light and worse
    request_log: RequestLogSettings | None = None  # off unless asked for
    decode: str | None = None  # auto / score / generate for every predictor; None: as compiled

    def __post_init__(self) -> None:
        """Refuse values vLLM, the memory plan or the generated files cannot use (UsageError).

        Checked here, not only in the memory plan: without a model config the plan is
        skipped and a bad value would otherwise reach vllm.yaml, the manifests and the
        README's commands unchecked.
        """
        for flag, value in (
            ("--max-tokens", self.max_tokens),
            ("--max-num-seqs", self.max_num_seqs),
            ("--tensor-parallel-size", self.tensor_parallel_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{flag} must be a whole number of at least 1, got {value!r}")
        if self.max_model_len is not None and (
            not isinstance(self.max_model_len, int) or self.max_model_len <= self.max_tokens
        ):
            raise UsageError(
                f"--max-model-len {self.max_model_len!r} must be larger than --max-tokens "
                f"{self.max_tokens} (it holds the prompt and the answer); or leave it out to "
                "derive it from the program's prompts"
            )
        if not 0 < self.gpu_memory_utilization <= 1:
            raise UsageError(
                f"--gpu-memory-utilization must be a fraction in (0, 1], e.g. 0.9; "
                f"got {self.gpu_memory_utilization!r}"
            )
        if self.gpu_memory_gib is not None and not 0 < self.gpu_memory_gib <= 65_536:
            raise UsageError(
                f"--gpu-memory-gib must be > 0 and at most 65536 (GiB of one GPU), "
                f"got {self.gpu_memory_gib!r}"
            )
        if self.decode not in (None, "auto", "score", "generate"):
            raise UsageError(
                f"--decode must be auto, score or generate (or left out: as compiled), "
                f"got {self.decode!r}"
            )
        if self.withhold not in (None, "red", "yellow"):
            raise UsageError(
                f"--withhold must be red or yellow (yellow and red), got {self.withhold!r}"
            )
        if self.dtype.lower() not in DTYPE_BYTES:
            raise UsageError(
                f"unknown --dtype {self.dtype!r}; use one of {', '.join(sorted(DTYPE_BYTES))}"
            )
        if self.api_key_env is not None and not _ENV_NAME.fullmatch(self.api_key_env):
            raise UsageError(
                f"--api-key-env {self.api_key_env!r} is not an environment variable name; "
                "use letters, digits and '_', not starting with a digit (e.g. OPENAI_API_KEY)"
            )
        if self.image is not None and not _IMAGE.fullmatch(self.image):
            raise UsageError(
                f"--image {self.image!r} is not a container image reference; use e.g. "
                "registry.example.com/team/triage-program:1.0"
            )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A container image reference: [registry[:port]/]path[:tag][@digest], no spaces or quotes.
_IMAGE = re.compile(
    r"[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)*"
    r"(:\w[\w.-]{0,127})?(@sha256:[0-9a-f]{64})?"
)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    path: Path
    manifest: dict[str, Any]
    memory_plan: MemoryPlan | None
    notes: tuple[str, ...]


def _name(artifact: Path, given: str | None) -> str:
    name = (
        given
        or re.sub(r"[^A-Za-z0-9_.-]+", "-", artifact.stem.split("@", 1)[0]).strip("-.")
        or "program"
    )
    from .program import program_name

    return program_name(name)


def _placeholder(schema: Mapping[str, Any]) -> Any:
    if "enum" in schema:
        return schema["enum"][0]
    return {"integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}.get(
        str(schema.get("type")), "example"
    )


def _records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"--reference-data {path} does not exist; pass a JSONL file of dev examples"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--reference-data {path} cannot be read as UTF-8 text ({exc})") from None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                row = loads_bounded(line)
            except TooDeepError as exc:
                raise UsageError(f"{path} line {number}: {exc}") from None
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path} line {number} is not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path} line {number} must be a JSON object")
            _latency(row, f"{path} line {number}")  # fail here, with the line number
            rows.append(row)
    return rows


def _latency(row: Mapping[str, Any], where: str = "a reference row") -> float | None:
    """The row's recorded latency in seconds (``latency_s``, or ``latency_ms``), if any."""
    for key, scale in (("latency_s", 1.0), ("latency_ms", 1000.0)):
        if key in row:
            value = row[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise UsageError(f"{where}: {key} must be a non-negative number, got {value!r}")
            return float(value) / scale
    return None


def _source_files(program: lf.Module) -> dict[str, bytes]:
    """The program class's source when it is user code (not lmforge's own modules)."""
    cls = type(program)
    if cls.__module__.split(".")[0] == "lmforge":
        return {}
    module = sys.modules.get(cls.__module__)
    path = inspect.getsourcefile(module) if module is not None else None
    if path is None:
        raise UsageError(
            f"cannot find the source of {cls.__module__}; make it importable where you export"
        )
    relative = "program_source/" + cls.__module__.replace(".", "/") + ".py"
    return {relative: Path(path).read_bytes()}


def _adapter_files(document: Mapping[str, Any], directory: Path) -> dict[str, bytes]:
    """The LoRA files the artifact's predictors load (``lm.lora``, kept next to the artifact
    at relative paths), at the same paths in the bundle so its program.json loads there."""
    files: dict[str, bytes] = {}
    for name, state in (document.get("predictors") or {}).items():
        lm = state.get("lm") if isinstance(state, Mapping) else None
        lora = lm.get("lora") if isinstance(lm, Mapping) else None
        if not lora:
            continue
        source = confined_path(lora, directory, what=f"predictor {name}: its LoRA path")
        paths = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for path in paths:
            relative = posixpath.normpath(path.relative_to(directory).as_posix())
            if not path.is_file():
                raise UsageError(
                    f"the artifact's LoRA adapter {path} is missing; keep the adapters/ folder "
                    "next to the artifact"
                )
            files[relative] = path.read_bytes()
    return files


def _tokens(text: str, tokenizer: Any) -> int:
    if tokenizer is not None:
        return len(tokenizer.encode(text).ids)
    return math.ceil(len(text) / 3)  # conservative: real tokenizers average ~4 chars per token


def _tokenizer(model: str) -> Any:
    path = Path(model) / "tokenizer.json"
    if not path.is_file():
        return None
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    return Tokenizer.from_file(str(path))


def _predictor_specs(
    program: lf.Module, sample_inputs: list[dict[str, Any]], default_model: str, tokenizer: Any
) -> tuple[dict[str, dict[str, Any]], int]:
    """Per predictor: model type, profile model, defaults, structured output; and the
    longest rendered prompt in tokens."""
    specs: dict[str, dict[str, Any]] = {}
    longest = 0
    for index, (name, predictor) in enumerate(program.named_predictors()):
        config: dict[str, Any] = (
            predictor.lm.config(include_endpoint=False)
            if predictor.lm is not None
            else {"model": default_model}
        )
        model_type = config.get("model_type") or (
            "text" if not profile_for(config["model"]).chat_template else "chat"
        )
        probe = lf.LM(config["model"], model_type=model_type, cache=False)
        stored: dict[str, Any] = dict(config.get("defaults") or {})
        defaults = {k: v for k, v in stored.items() if not is_secret_key(k)}
        # A per-input selector's pool rows are inputs too: their prompts show other demos.
        pool = getattr(predictor.demo_selector, "pool", ())
        inputs_list = [dict(d) for d in (*predictor.demos, *pool[:200])]
        if index == 0:
            inputs_list = sample_inputs + inputs_list
        names = [f.name for f in predictor.signature.input_fields]
        candidates = [
            {n: row[n] for n in names} for row in inputs_list if all(n in row for n in names)
        ]
        if not candidates:
            candidates = [{n: "" for n in names}]
        prompt = None
        for inputs in candidates:
            prompt = predictor.format(inputs, lm=probe)
            longest = max(
                longest,
                _tokens(prompt.text if prompt.text is not None else prompt.render(), tokenizer),
            )
        assert prompt is not None
        structured: dict[str, Any] | None = None
        if prompt.response_format is not None:
            structured = {"response_format": prompt.response_format}
        elif (converted := constraint_to_structured(prompt.constraint)) is not None:
            structured = {"structured_outputs": converted}
        specs[name] = {
            "model_type": model_type,
            "profile_model": config["model"],
            "defaults": defaults,
            "structured_output": structured,
        }
    return specs, longest


def export_bundle(
    artifact: str | Path, out: str | Path, options: ExportOptions, *, force: bool = False
) -> ExportResult:
    """Write a bundle for ``artifact`` at ``out`` (see DESIGN.md §6 for its contents)."""
    artifact = Path(artifact)
    if options.target == "mlflow":  # an MLflow model folder, not a program-server bundle
        from .mlflow_target import export_mlflow

        return export_mlflow(artifact, Path(out), options, force=force)
    document = read_artifact(artifact)
    program = lf.load(artifact, trusted_modules=options.trusted_modules)
    meta: dict[str, Any] = dict(document.get("meta") or {})
    name = _name(artifact, options.name)
    signature = program_signature(program)
    models = build_models(name, signature)
    notes: list[str] = []
    files: dict[str, bytes] = {
        "program.json": artifact.read_bytes(),
        **_source_files(program),
        **_adapter_files(document, artifact.parent),
    }

    rows = _records(options.reference_data) if options.reference_data else []
    reference = None
    if rows:
        reference = reference_stats(
            signature, rows, latencies=[x for r in rows if (x := _latency(r)) is not None]
        )
    elif isinstance(meta.get("reference_stats"), Mapping):
        reference = dict(meta["reference_stats"])
    elif isinstance(meta.get("devset"), list) and meta["devset"]:
        reference = reference_stats(
            signature, [dict(r) for r in meta["devset"] if isinstance(r, Mapping)]
        )
    else:
        notes.append("no reference data: drift watch is off (pass --reference-data dev.jsonl)")
    input_names = [f.name for f in signature.input_fields]
    sample = [{n: r[n] for n in input_names} for r in rows if all(n in r for n in input_names)]
    example = (
        sample[0]
        if sample
        else {
            n: _placeholder(s) for n, s in models.request.model_json_schema()["properties"].items()
        }
    )

    first_lm = next((p.lm for p in program.predictors() if p.lm is not None), None)
    source_model = str(
        meta.get("model") or (first_lm.model if first_lm is not None else DEFAULT_LOCAL_MODEL)
    )
    engine_model = options.model or str(
        meta.get("hf_model") or HF_EQUIVALENTS.get(source_model, "")
    )
    tokenizer = _tokenizer(engine_model) if options.target == "vllm" and engine_model else None
    specs, longest = _predictor_specs(program, sample[:200], source_model, tokenizer)
    scores = (
        meta.get("scores")
        if isinstance(meta.get("scores"), Mapping)
        else {k: v for k, v in meta.items() if k.endswith("score") and isinstance(v, int | float)}
    )
    context: dict[str, Any] = {
        "name": name,
        "kname": k8s_name(name),
        "target": options.target,
        "lmforge_version": __version__,
        "lmforge_extras": ",".join(required_extras(program)),
        "vllm_version": VLLM_VERSION,
        "artifact_name": artifact.name,
        "signature": repr(signature),
        "scores": scores,
        "has_source": any(k.startswith("program_source/") for k in files),
        "inputs": ", ".join(f"`{n}`" for n in input_names),
        "outputs": ", ".join(f"`{f.name}`" for f in signature.output_fields),
        "image": options.image or f"{k8s_name(name)}-program:{__version__}",
        # Python literals of JSON text, for smoke_test.py's json.loads(...): JSON itself is not
        # Python (true/false/null).
        "example_inputs": repr(json.dumps(example, ensure_ascii=False, sort_keys=True)),
        "output_schema": repr(json.dumps(models.response.model_json_schema(), sort_keys=True)),
        "tensor_parallel_size": options.tensor_parallel_size,
        "lora": None,
        "api_key_env": "",
        "fallback_key_env": "",
        "api_key_secret_key": "",
        "fallback_model": options.fallback_model,
        "memory_summary": "",
        "cache_hints": None,
        "structured_kinds": "",
        "answers": {"metadata": options.answer_metadata, "withhold": options.withhold},
    }
    server: dict[str, Any] = {
        "max_body_bytes": 1_048_576,
        "rate_limit_per_minute": 600,
        "rate_limit_burst": 60,
        "max_concurrency": max(8, options.max_num_seqs * 2),
        "request_timeout_s": 120.0,
    }
    # The limits as served (defaults filled in), for the README's section on them.
    context["limits"] = ServerConfig(insecure_no_auth=True, **server)
    context["replicas"] = PROGRAM_REPLICAS
    plan: MemoryPlan | None = None
    if options.target == "vllm":
        backend, plan = vllm_files(
            options, context, files, specs, longest, engine_model, artifact, meta, notes
        )
    elif options.target == "managed":
        backend = managed_backend(options, context, source_model)
    else:
        raise UsageError(f"unknown target {options.target!r}; use --target vllm, managed or mlflow")
    serving = {
        "format": "lmforge.serving",
        "version": 1,
        "name": name,
        "target": options.target,
        "max_tokens": options.max_tokens,
        "backend": backend,
        "predictors": specs,
        "server": server,
        "answers": context["answers"],
        "reference_stats": reference,
    }
    if options.decode is not None:
        serving["decode"] = options.decode
        if options.decode == "generate" and _calibrated_or_lit(program):
            notes.append(
                "--decode generate: served answers are generated, so the artifact's label "
                "calibration and light thresholds (measured on label scores) do not apply "
                "and answers carry no confidence or light"
            )
    if options.request_log is not None:
        serving["request_log"] = options.request_log.to_json()
        if not options.request_log.url.startswith(("postgresql://", "postgres://")):
            notes.append(
                f"the SQLite request log is per replica (k8s/program.yaml runs "
                f"{PROGRAM_REPLICAS}): feedback must reach the replica that answered, so "
                "with several replicas serve with --request-log postgresql://... instead"
            )
    context["request_log"] = serving.get("request_log")
    files["serving.json"] = dumps(serving).encode()
    env = environment()
    files["Dockerfile"] = env.get_template("Dockerfile.j2").render(context).encode()
    files["compose.yaml"] = env.get_template("compose.yaml.j2").render(context).encode()
    kcontext = {**context, "name": context["kname"]}
    files["k8s/program.yaml"] = env.get_template("k8s/program.yaml.j2").render(kcontext).encode()
    if options.target == "vllm":
        files["k8s/vllm.yaml"] = (
            env.get_template("k8s/vllm.yaml.j2")
            .render({**kcontext, "vllm_yaml": files["vllm.yaml"].decode()})
            .encode()
        )
    files.update(monitoring_files(env, context))
    files["README.md"] = env.get_template("README.md.j2").render(context).encode()
    files["smoke_test.py"] = env.get_template("smoke_test.py.j2").render(context).encode()
    info = {
        "name": name,
        "target": options.target,
        "lmforge_version": __version__,
        "engine": {"vllm": VLLM_VERSION}
        if options.target == "vllm"
        else {"litellm": "provider API"},
        "model": engine_model if options.target == "vllm" else backend["model"],
        "adapter": context["lora"],
        "scores": scores,
        "artifact_sha256": document["sha256"],
    }
    manifest = manifest_for(files, info)
    files["manifest.json"] = dumps(manifest).encode()
    path = write_bundle(Path(out), files, force=force)
    return ExportResult(path, manifest, plan, tuple(notes))


def _calibrated_or_lit(program: lf.Module) -> bool:
    """Whether a program carries a label calibration or light thresholds."""
    from lmforge.lights import thresholds_of

    calibrated = any(p.calibration is not None for p in program.predictors())
    return calibrated or thresholds_of(program) is not None
