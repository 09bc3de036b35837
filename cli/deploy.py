"""``lmforge export``, ``lmforge serve`` and ``lmforge bench``: bundles, serving, load tests."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import os
import warnings
from pathlib import Path

import typer
from lmforge.errors import MissingExtraError, UsageError

from .app import app, friendly
from .loading import TRUST_HELP

__all__: list[str] = []

METADATA_HELP = (
    "Answer {answer, confidence, light} instead of the outputs alone (both are always sent "
    "as X-LMForge-Confidence / X-LMForge-Light headers)."
)
DECODE_HELP = (
    "How the served program answers closed outputs: auto (score labels when the engine can, "
    "as compiled), score, or generate (constrained choice: one prefill per call instead of "
    "log-probabilities over every prompt token of every label, much cheaper on a CPU "
    "engine; answers then carry no confidence or light). Default: as compiled."
)
WITHHOLD_HELP = (
    "red (or yellow: yellow and red): answer such answers with HTTP 200 and "
    '{"answer": null, "light": ...} instead of the outputs.'
)


@app.command("export")
@friendly
def export(
    artifact: Path = typer.Argument(..., help="A compiled program (artifact JSON)."),
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help="vllm (self-hosted vLLM), managed (provider API) or mlflow (an MLflow model).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="The bundle directory to write."),
    force: bool = typer.Option(False, help="Replace a non-empty --out."),
    name: str | None = typer.Option(None, help="Program name in URLs and as the OpenAI model id."),
    model: str | None = typer.Option(
        None, help="vllm: HF model id or folder; managed: provider model or ft: id."
    ),
    max_tokens: int = typer.Option(256, help="Output tokens per LM call."),
    max_num_seqs: int = typer.Option(16, help="vLLM sequences in flight."),
    max_model_len: int | None = typer.Option(None, help="Override the derived max-model-len."),
    tensor_parallel_size: int = typer.Option(1, help="GPUs per vLLM replica."),
    gpu: str | None = typer.Option(
        None, help="GPU for the memory plan (L4, A10G, A100-80GB, H100, ...)."
    ),
    gpu_memory_gib: float | None = typer.Option(
        None, help="GPU memory for the memory plan, instead of --gpu."
    ),
    gpu_memory_utilization: float = typer.Option(0.9, help="vLLM's share of GPU memory."),
    dtype: str = typer.Option("bfloat16", help="Weights and KV-cache dtype."),
    model_config: Path | None = typer.Option(
        None, help="The model's config.json for the memory plan."
    ),
    lora: Path | None = typer.Option(None, help="A PEFT LoRA adapter folder to serve (vllm)."),
    bundle_mount: str = typer.Option(
        "/bundle",
        help="vllm: where vLLM sees this bundle (its vllm.yaml and LoRA adapters): /bundle in "
        "the compose and k8s files, or the bundle's own absolute path to run vllm serve on "
        "this machine.",
    ),
    reference_data: Path | None = typer.Option(
        None, help="Dev-set JSONL for drift reference statistics."
    ),
    skip_memory_check: bool = typer.Option(
        False, help="Write the bundle even if the memory plan does not fit."
    ),
    api_key_env: str | None = typer.Option(
        None, help="managed: the provider key's environment variable."
    ),
    fallback_model: str | None = typer.Option(
        None, help="managed: a second model used when the first fails."
    ),
    image: str | None = typer.Option(None, help="The program server image name in k8s manifests."),
    trust: list[str] = typer.Option([], "--trust", help=TRUST_HELP),
    answer_metadata: bool = typer.Option(False, "--answer-metadata", help=METADATA_HELP),
    withhold: str | None = typer.Option(None, "--withhold", help=WITHHOLD_HELP),
    decode: str | None = typer.Option(None, "--decode", help=DECODE_HELP),
    request_log: str | None = typer.Option(
        None,
        "--request-log",
        help="Log answers for feedback to this SQLite file (relative: inside the bundle, e.g. "
        "data/requests.db, a volume in compose.yaml); off by default.",
    ),
    request_log_hash: list[str] = typer.Option(
        [], "--request-log-hash", help="A field logged as its SHA-256 only; repeatable."
    ),
    request_log_drop: list[str] = typer.Option(
        [], "--request-log-drop", help="A field never logged; repeatable."
    ),
    request_log_max_rows: int | None = typer.Option(
        None, help="Keep at most this many logged answers (those with feedback are kept)."
    ),
    request_log_max_age_days: float | None = typer.Option(
        None, help="Prune logged answers older than this (those with feedback are kept)."
    ),
    feedback_sample: float = typer.Option(
        0.0, help="Share of green answers also sent with X-Feedback-Requested (0-1)."
    ),
) -> None:
    """Export a compiled artifact as a served bundle for vLLM or a managed API, or as an
    MLflow model folder (``mlflow models serve -m OUT``)."""
    from lmforge.targets.export import ExportOptions, export_bundle

    from .loading import trusted_modules

    if target not in ("vllm", "managed", "mlflow"):
        raise UsageError(f"unknown target {target!r}; use --target vllm, managed or mlflow")
    from lmforge.targets.request_log import RequestLogSettings

    log = None
    if request_log is not None:
        log = RequestLogSettings(
            url=request_log,
            hash_fields=tuple(request_log_hash),
            drop_fields=tuple(request_log_drop),
            max_rows=request_log_max_rows,
            max_age_days=request_log_max_age_days,
            feedback_sample=feedback_sample,
        )
    elif (
        request_log_hash
        or request_log_drop
        or request_log_max_rows
        or request_log_max_age_days
        or feedback_sample
    ):
        raise UsageError("the --request-log-* and --feedback-sample options need --request-log")
    options = ExportOptions(
        request_log=log,
        target=target,  # type: ignore[arg-type]
        name=name,
        model=model,
        max_tokens=max_tokens,
        max_num_seqs=max_num_seqs,
        max_model_len=max_model_len,
        tensor_parallel_size=tensor_parallel_size,
        gpu=gpu,
        gpu_memory_gib=gpu_memory_gib,
        gpu_memory_utilization=gpu_memory_utilization,
        dtype=dtype,
        model_config=model_config,
        lora=lora,
        bundle_mount=bundle_mount,
        reference_data=reference_data,
        skip_memory_check=skip_memory_check,
        api_key_env=api_key_env,
        fallback_model=fallback_model,
        image=image,
        trusted_modules=tuple(trusted_modules(trust)),
        answer_metadata=answer_metadata,
        withhold=withhold,
        decode=decode,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the notes below repeat them
        result = export_bundle(artifact, out, options, force=force)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.memory_plan is not None:
        typer.echo(result.memory_plan.summary())
    typer.echo(f"wrote {target} bundle {result.path} ({len(result.manifest['files']) + 1} files)")
    if target == "mlflow":
        typer.echo(f"serve it: mlflow models serve -m {result.path} --env-manager local")


@app.command("serve")
@friendly
def serve(
    bundle: Path = typer.Argument(..., help="A bundle directory written by `lmforge export`."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
    port: int = typer.Option(8080, help="Port to listen on."),
    insecure_no_auth: bool = typer.Option(
        False,
        "--insecure-no-auth",
        help="Serve without API keys (local use only: refused on a non-loopback --host "
        "unless --allow-public-no-auth is given too).",
    ),
    allow_public_no_auth: bool = typer.Option(
        False,
        "--allow-public-no-auth",
        help="With --insecure-no-auth, accept a non-loopback --host: anyone who can reach it "
        "calls the program, on your model budget.",
    ),
    max_concurrency: int | None = typer.Option(
        None, help="Program calls in flight before answering 503."
    ),
    rate_limit_per_minute: float | None = typer.Option(
        None,
        help="Requests per minute per API key, counted by this process only: with N replicas "
        "the service admits N times this. Put the global limit on the gateway and give each "
        "replica its share (global limit / replicas).",
    ),
    rate_limit_burst: int | None = typer.Option(
        None, help="Requests per API key at once before the rate applies (per process too)."
    ),
    header_timeout: float | None = typer.Option(
        None, help="Seconds a connection may take to send its request headers (default 10)."
    ),
    keep_alive_timeout: int | None = typer.Option(
        None, help="Seconds an idle keep-alive connection stays open (default 5)."
    ),
    max_connections: int | None = typer.Option(
        None, help="Open connections per process; one more is answered 503 (default 512)."
    ),
    graceful_timeout: float = typer.Option(
        30.0, help="Seconds to finish in-flight requests on shutdown."
    ),
    request_log: str | None = typer.Option(
        None,
        "--request-log",
        help="Log answers for feedback to this SQLite file or postgresql:// URL (overrides "
        "the bundle's request log).",
    ),
    artifact_lm: bool = typer.Option(
        False,
        "--artifact-lm",
        help="Call the model recorded in the artifact (e.g. the embedded local model) instead "
        "of the bundle's vLLM or provider backend.",
    ),
    answer_metadata: bool = typer.Option(False, "--answer-metadata", help=METADATA_HELP),
    withhold: str | None = typer.Option(None, "--withhold", help=WITHHOLD_HELP),
) -> None:
    """Run a bundle's program server (API keys from $LMFORGE_API_KEYS).

    Limits (rate, burst, concurrency, connections) hold per process: each replica counts
    only what it serves, so the gateway in front owns the global limits. The bundle's
    serving.json sets them; the options above override it.
    """
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    if not (math.isfinite(graceful_timeout) and graceful_timeout >= 0):
        raise UsageError(f"--graceful-timeout must be 0 or more seconds, got {graceful_timeout:g}")
    if insecure_no_auth and not allow_public_no_auth and not _is_loopback(host):
        raise UsageError(
            f"--insecure-no-auth on --host {host} would let anyone who reaches it call the "
            "program: use --host 127.0.0.1, or set LMFORGE_API_KEYS instead, or add "
            "--allow-public-no-auth to serve it unauthenticated anyway"
        )
    overrides = {
        "max_concurrency": max_concurrency,
        "rate_limit_per_minute": rate_limit_per_minute,
        "rate_limit_burst": rate_limit_burst,
        "header_timeout_s": header_timeout,
        "keep_alive_timeout_s": keep_alive_timeout,
        "max_connections": max_connections,
    }
    for key, value in overrides.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            flag = "--" + key.removesuffix("_s").replace("_", "-")
            raise UsageError(f"{flag} must be a positive number, got {value:g}")
    try:
        import uvicorn
    except ImportError:
        raise MissingExtraError("uvicorn", "serve", "lmforge serve") from None
    from lmforge._atomic import restore_aside
    from lmforge.targets.bundle import bundle_limits, load_bundle, read_serving
    from lmforge.targets.config import ServerConfig, api_keys_from_env
    from lmforge.targets.connections import uvicorn_config
    from lmforge.targets.server import create_app

    restore_aside(bundle)  # a bundle an interrupted `export --force` left renamed aside
    # A bundle without serving.json is reported by load_bundle (missing file / not a bundle).
    serving = read_serving(bundle) if (bundle / "serving.json").is_file() else {}
    # Limits only (ArtifactError for anything else); authentication comes from the flags.
    limits = bundle_limits(serving)
    limits.update({key: value for key, value in overrides.items() if value is not None})
    name = serving.get("name")
    config = ServerConfig(
        name=name if isinstance(name, str) and name else "program",
        api_keys=api_keys_from_env(),
        insecure_no_auth=insecure_no_auth,
        answer_metadata=answer_metadata,
        withhold=withhold,
        **limits,
    )
    if request_log is not None:
        import dataclasses

        from lmforge.targets.request_log import RequestLogSettings
        from lmforge.targets.serving_file import bundle_request_log

        # The bundle's hashing, dropping and retention settings stay; only the store moves.
        bundled = bundle_request_log(serving, bundle)
        config = config.replace(
            request_log=dataclasses.replace(bundled, url=request_log)
            if bundled is not None
            else RequestLogSettings(url=request_log)
        )
    program, config = load_bundle(bundle, config, artifact_lms=artifact_lm)
    app_ = create_app(program, config)
    if insecure_no_auth:
        typer.echo("warning: serving WITHOUT authentication (--insecure-no-auth)", err=True)
    typer.echo(
        f"serving {config.name} on http://{host}:{port} (POST /v1/programs/{config.name})", err=True
    )
    # One access line per request (method, path, status, latency, key id, request id; never
    # bodies or keys), every record on one line.
    server = uvicorn.Server(
        uvicorn_config(
            app_,
            config,
            host=host,
            port=port,
            timeout_graceful_shutdown=math.ceil(graceful_timeout),
            log_level="info",
        )
    )
    server.run()


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command("bench")
@friendly
def bench(
    url: str = typer.Argument(
        ..., help="The program endpoint, e.g. http://127.0.0.1:8080/v1/programs/triage."
    ),
    input: str = typer.Option(
        ..., "--input", "-i", help="Inputs as a JSON object, sent with every request."
    ),
    concurrency: int = typer.Option(8, help="Requests in flight."),
    requests: int = typer.Option(100, help="Requests measured."),
    warmup: int | None = typer.Option(
        None,
        help="Requests sent first and not counted, to open the connections "
        "(default: one per concurrent client).",
    ),
    api_key: str | None = typer.Option(
        None, help="Bearer key (default: first of $LMFORGE_API_KEYS)."
    ),
) -> None:
    """Load-test a served program: p50/p95/p99 latency, throughput and errors."""
    from lmforge.targets.loadtest import run_load

    try:
        payload = json.loads(input)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--input is not valid JSON ({exc.msg})") from None
    if not isinstance(payload, dict):
        raise UsageError("--input must be a JSON object of the program's inputs")
    if concurrency < 1 or requests < 1:
        raise UsageError("--concurrency and --requests must be at least 1")
    if warmup is not None and warmup < 0:
        raise UsageError("--warmup must be 0 or more")
    key = api_key or (os.environ.get("LMFORGE_API_KEYS", "").split(",")[0].strip() or None)
    result = asyncio.run(
        run_load(
            url,
            payload,
            requests=requests,
            concurrency=concurrency,
            api_key=key,
            warmup=concurrency if warmup is None else warmup,
        )
    )
    s = result.summary()
    typer.echo(
        f"{s['ok']}/{s['requests']} ok at concurrency {s['concurrency']} in {s['wall_s']} s: "
        f"{s['throughput_rps']} req/s; latency p50 {s['p50_ms']} ms, p95 {s['p95_ms']} ms, "
        f"p99 {s['p99_ms']} ms; errors: {s['errors'] or 'none'}"
    )
    if result.errors:
        raise typer.Exit(1)
