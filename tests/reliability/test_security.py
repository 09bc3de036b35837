"""Security: an API key never reaches anything lmforge writes or prints; every server route
but ``/health`` needs authentication; a loaded artifact cannot redirect the LM to another
endpoint unless the caller allows it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import lmforge as lf
import pytest
from lmforge.lm.retry import RetryPolicy

from ._secrets import scan
from ._support import TEAMS, WORDS, chat_reply, full_size, record
from .fault_server import FaultPlan, FaultServer

pytestmark = pytest.mark.reliability

SECRET = "sk-lmforge-canary-" + "7c1e9d0b4a2f86e3" * 2
SERVER_KEY = "server-key-0123456789abcdef"
EVIL = "http://203.0.113.7:9/v1"


def _forms(secret: str) -> list[bytes]:
    """The secret as it could appear: raw, URL-quoted, JSON-escaped, and its tail alone."""
    return sorted(
        {
            secret.encode(),
            quote(secret).encode(),
            json.dumps(secret)[1:-1].encode(),
            secret[-16:].encode(),
        }
    )


def _leaks(blob: bytes, secret: str = SECRET) -> list[bytes]:
    return [form for form in _forms(secret) if form in blob]


def _log_text(records: list[logging.LogRecord]) -> bytes:
    """Log records as scanned: the logger name, the message and the raw arguments."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in records).encode()


def _rows(n: int) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        team = TEAMS[i % 3]
        rows.append({"ticket": f"ticket {i}: my {WORDS[team].split()[i % 3]}", "team": team})
    return rows


def _write_jsonl(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def model_server() -> Iterator[FaultServer]:
    server = FaultServer(chat_reply, FaultPlan(max_requests=5000))
    with server.running():
        yield server


def test_api_key_never_written_or_printed(
    model_server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("fastapi")
    import asyncio

    import httpx
    from lmforge.optimizers import BootstrapFewShot
    from lmforge.targets import create_app
    from lmforge.targets.export import ExportOptions, export_bundle

    work = tmp_path / "work"
    work.mkdir()
    cache_dir = tmp_path / "cache"
    for name in ("OPENAI_API_KEY", "HOSTED_VLLM_API_KEY", "LMFORGE_TEST_KEY"):
        monkeypatch.setenv(name, SECRET)
    monkeypatch.setenv("LMFORGE_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("LMFORGE_API_KEYS", SERVER_KEY)
    monkeypatch.delenv("LMFORGE_BLOCK_NETWORK", raising=False)  # the model server is loopback
    caplog.set_level(logging.DEBUG)
    train = _write_jsonl(work / "train.jsonl", _rows(12))
    dev = _write_jsonl(work / "dev.jsonl", _rows(9)[3:])

    # 1. In-process: evaluate, compile (with a run directory), save.
    lm = lf.LM(
        "hosted_vllm/fake",
        api_base=model_server.base_url,
        api_key=SECRET,
        cache=cache_dir / "lm",
        retry=RetryPolicy(max_attempts=2, base_delay=0.01),
    )
    trainset = lf.data.load_jsonl(train, inputs=["ticket"])
    devset = lf.data.load_jsonl(dev, inputs=["ticket"])
    program = lf.Predict(
        "ticket -> team: Literal['billing', 'technical', 'shipping']", adapter=lf.ChatAdapter()
    )
    with lf.use(lm=lm), lf.track() as tracker:
        result = lf.evaluate(program, devset, lf.metrics.exact_match, progress=False)
        compiled = BootstrapFewShot(max_bootstrapped_demos=2).compile(
            program,
            trainset,
            metric=lf.metrics.exact_match,
            valset=devset,
            lm=lm,
            run_dir=work / "run",
            progress=False,
        )
    assert result.score == 1.0, result.summary()
    artifact = work / "router.json"
    compiled.save(artifact, meta={"note": "security scan"})
    (work / "eval.json").write_text(
        json.dumps(
            result.to_json() if hasattr(result, "to_json") else result.summary(), default=str
        )
    )
    print(repr(lm), repr(compiled), tracker.totals())

    # 2. The CLI: compile and export, with the key only in the environment.
    (work / "lms.py").write_text(
        textwrap.dedent(f"""
        import os
        import lmforge as lf
        lm = lf.LM("hosted_vllm/fake", api_base={model_server.base_url!r},
                   api_key=os.environ["LMFORGE_TEST_KEY"])
    """)
    )
    (work / "prog.py").write_text(
        "import lmforge as lf\n"
        "program = lf.Predict(\"ticket -> team: Literal['billing', 'technical', 'shipping']\")\n"
    )
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    outputs = []
    commands = [
        [
            "compile",
            f"{work / 'prog.py'}:program",
            "--train",
            str(train),
            "--dev",
            str(dev),
            "--metric",
            "exact_match",
            "--optimizer",
            "bootstrap",
            "--model",
            f"{work / 'lms.py'}:lm",
            "--out",
            str(work / "compiled"),
        ],
        [
            "export",
            str(artifact),
            "--target",
            "managed",
            "--out",
            str(work / "bundle_cli"),
            "--api-key-env",
            "HOSTED_VLLM_API_KEY",
        ],
    ]
    # The CLI's own start-up costs seconds per command: run it in the full-size suite only.
    for args in commands if full_size() else []:
        done = subprocess.run(
            [sys.executable, "-m", "lmforge.cli.main", *args],
            env=env,
            cwd=work,
            capture_output=True,
            timeout=300,
        )
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, (done.stdout + done.stderr).decode()[-2000:]
    assert not full_size() or list((work / "compiled").glob("*.json"))

    # 3. Export in-process and serve the bundle; the provider endpoint is the fake server.
    bundle = export_bundle(
        artifact,
        work / "bundle",
        ExportOptions(target="managed", api_key_env="HOSTED_VLLM_API_KEY"),
    ).path
    monkeypatch.setenv("LMFORGE_PROVIDER_API_BASE", model_server.base_url)
    app = create_app(bundle)
    bodies: list[bytes] = []

    async def serve() -> None:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://t",
            headers={"Authorization": f"Bearer {SERVER_KEY}"},
        ) as client:
            for path, body in (
                ("/v1/programs/router", {"ticket": "my invoice"}),
                (
                    "/v1/chat/completions",
                    {"model": "router", "messages": [{"role": "user", "content": "parcel late"}]},
                ),
                ("/v1/programs/router", {"ticket": 5}),
            ):
                response = await client.post(path, json=body)
                bodies.append(response.content)
            for path in ("/ready", "/metrics", "/v1/programs/router", "/openapi.json"):
                bodies.append((await client.get(path)).content)

    asyncio.run(serve())
    assert b'"team"' in bodies[0] or b"billing" in bodies[0], bodies[0]

    captured = capfd.readouterr()
    streams = {
        "log records": _log_text(caplog.records),
        "stdout/stderr": (captured.out + captured.err).encode(),
        "cli output": b"\n".join(outputs),
        "server responses": b"\n".join(bodies),
    }
    leaks = {name: _leaks(blob) for name, blob in streams.items() if _leaks(blob)}
    files = scan([work, cache_dir], _forms(SECRET))
    leaks.update(files.found)
    # Positive control: the scan reads the cached replies, which diskcache compresses, so a
    # key stored with them would have been found.
    control = scan([cache_dir], [b"[[ ## team ## ]]"])
    scanned = [p for root in (work, cache_dir) for p in root.rglob("*") if p.is_file()]
    record(
        "test_api_key_never_written_or_printed",
        files=files.files,
        sqlite_rows=files.sqlite_rows,
        inflated=files.inflated,
        mib=round(sum(p.stat().st_size for p in scanned) / 2**20, 2),
        streams=len(streams),
        leaks=len(leaks),
    )
    assert control.found and control.inflated, "the scan did not see the LM cache's replies"
    assert not leaks, f"the API key was found in: {sorted(leaks)}"


CANARY = "lmforge-canary-" + "5d2b8e71c04a9f36" * 2


def _plant_lm_cache(root: Path) -> None:
    from lmforge.testing import FunctionLM

    def reply(request: Any) -> str:
        # A long reply goes to a diskcache value file, a short one into cache.db; the size
        # that counts is the compressed one, so the padding is random.
        long = "long" in json.dumps(request.messages)
        padding = " " + random.Random(0).randbytes(60_000).hex() if long else ""
        return f"[[ ## answer ## ]]\n{CANARY}{padding}"

    lm = FunctionLM(reply, cache=root)
    program = lf.Predict("question -> answer", lm=lm)
    assert program(question="short").answer.startswith(CANARY)
    program(question="long")
    assert any(root.rglob("*.val")), "the long reply should have its own value file"
    # diskcache compresses keys and values: a plain byte scan cannot see the reply.
    assert not any(CANARY.encode() in p.read_bytes() for p in root.rglob("*") if p.is_file())


def _canary_program() -> lf.Predict:
    signature = lf.Predict("question -> answer").signature.with_instructions(CANARY)
    return lf.Predict(signature, lm=lf.LM("openai/gpt-4o-mini"))


def _plant_artifact(root: Path) -> None:
    root.mkdir()
    _canary_program().save(root / "program.json")


def _plant_bundle(root: Path) -> None:
    from lmforge.targets.export import ExportOptions, export_bundle

    artifact = root.parent / "source.json"
    _canary_program().save(artifact)
    export_bundle(artifact, root, ExportOptions(target="managed", api_key_env="OPENAI_API_KEY"))


def _plant_run_dir(root: Path) -> None:
    from lmforge.optimizers.store import RunStore

    RunStore(root, {"program": "canary"}).put("step-0", {"instructions": CANARY}, {})


def _plant_optuna_study(root: Path) -> None:
    optuna = pytest.importorskip("optuna")
    from lmforge.optimizers.mipro_study import open_study

    root.mkdir()
    study = open_study(
        f"sqlite:///{root / 'study.db'}", "canary", optuna.samplers.RandomSampler(seed=0)
    )
    with warnings.catch_warnings():
        # optuna notes that its heartbeat is meant for Study.optimize (MIPRO uses ask/tell)
        warnings.simplefilter("ignore", UserWarning)
        trial = study.ask()
        # Longer than a SQLite page: the value spans overflow pages.
        trial.set_user_attr("note", "x" * 9000 + CANARY)
        study.tell(trial, 1.0)


def _plant_report(root: Path) -> None:
    pytest.importorskip("plotly")
    from lmforge.optimizers import report

    document = {
        "title": "canary",
        "runs": [
            {
                "model": "test/model",
                "optimizer": "bootstrap",
                "scores": {"dev": 1.0},
                "prompts": {"self": {"instructions": CANARY, "demos": 0, "prompt": "q"}},
            }
        ],
    }
    report.write_json(document, root / "report.json")
    report.write_html(document, root / "report.html")


STORES = {
    "lm cache": _plant_lm_cache,
    "artifact": _plant_artifact,
    "bundle": _plant_bundle,
    "run directory": _plant_run_dir,
    "optuna sqlite": _plant_optuna_study,
    "report": _plant_report,
}


@pytest.mark.parametrize("store", sorted(STORES))
def test_scan_finds_a_canary_planted_in_each_store(store: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    STORES[store](root)
    result = scan([root], _forms(CANARY))
    record(
        "test_scan_finds_a_canary_planted_in_each_store",
        store=store,
        files=result.files,
        sqlite_rows=result.sqlite_rows,
        inflated=result.inflated,
        canaries=len(result.found),
    )
    assert result.found, f"the scan missed a canary written to the {store}"
    assert CANARY.encode() in {form for forms in result.found.values() for form in forms}


def test_scan_finds_a_canary_in_logs_and_output(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("lmforge.lm").warning("reply: %s", {"text": CANARY})
    print(CANARY, file=sys.stderr)
    captured = capfd.readouterr()
    assert _leaks(_log_text(caplog.records), CANARY)
    assert _leaks((captured.out + captured.err).encode(), CANARY)


def test_every_route_but_health_requires_auth() -> None:
    pytest.importorskip("fastapi")
    import asyncio

    import httpx
    from lmforge.targets import ServerConfig, create_app
    from lmforge.testing import FunctionLM

    program = lf.Predict("ticket -> team", lm=FunctionLM(lambda r: "[[ ## team ## ]]\nbilling"))
    app = create_app(program, ServerConfig(name="router", api_keys=(SERVER_KEY,)))
    routes = [
        (path, method)
        for route in app.routes
        for path in [getattr(route, "path", "")]
        for method in sorted(getattr(route, "methods", None) or {"GET"})
    ]
    assert len(routes) >= 8

    async def walk() -> dict[tuple[str, str], int]:
        seen = {}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as client:
            for path, method in routes:
                concrete = path.replace("{name}", "router")
                for headers in (
                    {},
                    {"Authorization": "Bearer wrong-key-0123456789abcdef"},
                    {"Authorization": SERVER_KEY},
                ):
                    response = await client.request(method, concrete, headers=headers, json={})
                    seen[(f"{method} {concrete}", headers.get("Authorization", ""))] = (
                        response.status_code
                    )
                    if path != "/health":
                        assert response.status_code == 401, (method, path, headers, response.text)
                        if method != "HEAD":  # HEAD answers carry no body
                            assert response.json()["error"]["type"] == "unauthorized", response.text
        return seen

    seen = asyncio.run(walk())
    assert seen[("GET /health", "")] == 200


def _rehash(document: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in document.items() if k != "sha256"}
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return {**body, "sha256": hashlib.sha256(blob.encode()).hexdigest()}


def test_loaded_artifact_cannot_redirect_the_lm(tmp_path: Path) -> None:
    path = tmp_path / "program.json"
    lf.Predict("q -> a", lm=lf.LM("openai/gpt-4o-mini", api_base=EVIL, api_key=SECRET)).save(path)
    text = path.read_text()
    assert SECRET not in text
    assert lf.load(path).lm.api_base is None  # type: ignore[attr-defined]
    assert lf.load(path, allow_endpoints=True).lm.api_base == EVIL  # type: ignore[attr-defined]

    # A hand-edited artifact smuggling endpoints in through every LM setting.
    document = json.loads(text)
    lm_config = document["predictors"]["self"]["lm"]
    lm_config["defaults"] = {**lm_config.get("defaults", {}), "base_url": EVIL, "api_base": EVIL}
    lm_config["base_url"] = EVIL
    path.write_text(json.dumps(_rehash(document)))
    try:
        loaded = lf.load(path)
    except lf.LMForgeError as exc:  # refusing the file outright is fine too
        assert "endpoint" in str(exc) or "api_base" in str(exc) or "base_url" in str(exc), exc
        return
    lm = loaded.lm  # type: ignore[attr-defined]
    assert lm.api_base is None
    assert EVIL not in json.dumps(getattr(lm, "defaults", {}), default=str)
