"""vllm bundles checked structurally, and served against a fake vLLM over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
import yaml
from fastapi import FastAPI, Request
from lmforge.errors import ArtifactError, UsageError
from lmforge.targets import create_app, load_bundle
from lmforge.targets.config import ServerConfig
from lmforge.targets.export import ExportOptions, export_bundle

from ._serving import serve

KEY = "bundle-key-0123456789abcdef"
GEMMA = {
    "hidden_size": 640,
    "num_hidden_layers": 18,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 256,
    "intermediate_size": 2048,
    "vocab_size": 262144,
    "max_position_embeddings": 32768,
}


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    demos = [
        {"ticket": "charged twice", "team": "billing"},
        {"ticket": "app crashes", "team": "tech"},
    ]
    program = lf.Predict(sig, lm=lf.LM("local/gemma-3-270m", cache=False), demos=demos)
    path = tmp_path / "triage@gemma.json"
    program.save(path, meta={"scores": {"dev": 0.95}})
    (tmp_path / "config.json").write_text(json.dumps(GEMMA))
    rows = [
        {"ticket": f"ticket {'x' * i}", "team": "billing" if i % 3 else "tech"} for i in range(40)
    ]
    (tmp_path / "dev.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _export(artifact: Path, out: Path, **changes: Any) -> Any:
    options = ExportOptions(
        target="vllm",
        model_config=artifact.parent / "config.json",
        gpu="L4",
        reference_data=artifact.parent / "dev.jsonl",
        **changes,
    )
    return export_bundle(artifact, out, options)


def _k8s(api: Any, document: dict[str, Any]) -> Any:
    kinds = {"Deployment": "V1Deployment", "Service": "V1Service", "ConfigMap": "V1ConfigMap"}
    model = api._ApiClient__deserialize(document, kinds[document["kind"]])
    # Round trip: a field the models do not know would be dropped and the documents differ.
    assert api.sanitize_for_serialization(model) == document
    return model


def test_k8s_manifests_are_valid_kubernetes_objects(artifact: Path, tmp_path: Path) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    bundle = _export(artifact, tmp_path / "bundle").path
    api = kubernetes.client.ApiClient()
    objects = [
        _k8s(api, d)
        for f in sorted((bundle / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if d
    ]
    kinds = sorted(type(o).__name__ for o in objects)
    assert kinds == ["V1ConfigMap", "V1Deployment", "V1Deployment", "V1Service", "V1Service"]
    text = "\n".join(f.read_text() for f in (bundle / "k8s").glob("*.yaml"))
    assert KEY not in text and "secretKeyRef" in text
    for deployment in (o for o in objects if type(o).__name__ == "V1Deployment"):
        container = deployment.spec.template.spec.containers[0]
        assert container.startup_probe and container.readiness_probe and container.liveness_probe
        if container.name == "vllm":
            assert container.resources.limits["nvidia.com/gpu"] == "1"
            shm = next(v for v in deployment.spec.template.spec.volumes if v.name == "shm")
            assert shm.empty_dir.medium == "Memory"
            assert any(m.mount_path == "/dev/shm" for m in container.volume_mounts)


def test_compose_vllm_yaml_and_manifest(artifact: Path, tmp_path: Path) -> None:
    result = _export(artifact, tmp_path / "bundle")
    bundle = result.path
    compose = yaml.safe_load((bundle / "compose.yaml").read_text())
    vllm, program = compose["services"]["vllm"], compose["services"]["program"]
    assert (
        vllm["image"] == "vllm/vllm-openai:v0.32.0"
        and "ports" not in vllm
        and vllm["expose"] == ["8000"]
    )
    assert vllm["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert vllm["ipc"] == "host" and vllm["healthcheck"]["start_period"]
    assert (
        program["depends_on"] == {"vllm": {"condition": "service_healthy"}}
        and program["healthcheck"]
    )
    assert {"hf-cache", "vllm-cache"} <= set(compose["volumes"])
    engine = yaml.safe_load((bundle / "vllm.yaml").read_text())
    assert engine["served-model-name"] == "triage" and engine["enable-prefix-caching"] is True
    assert engine["generation-config"] == "vllm" and engine["max-model-len"] >= 512
    assert "api-key" not in engine
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["scores"] == {"dev": 0.95} and manifest["engine"] == {"vllm": "0.32.0"}
    assert set(manifest["files"]) == {
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.name != "manifest.json"
    }
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["predictors"]["self"]["structured_output"] == {
        "structured_outputs": {"choice": [" billing", " tech"]}
    }
    assert serving["reference_stats"]["statistics"]["label.team"]["shares"][
        "tech"
    ] == pytest.approx(14 / 40)
    assert result.memory_plan is not None and result.memory_plan.status == "fits"


def test_export_is_atomic_reproducible_and_refuses_non_empty(
    artifact: Path, tmp_path: Path
) -> None:
    first = _export(artifact, tmp_path / "a").path
    second = _export(artifact, tmp_path / "b").path
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    with pytest.raises(UsageError, match="--force"):
        _export(artifact, tmp_path / "a")
    export_bundle(
        artifact,
        tmp_path / "a",
        ExportOptions(target="vllm", model_config=tmp_path / "config.json"),
        force=True,
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.")]  # no staging left behind
    with pytest.raises(UsageError, match="max-num-seqs"):
        _export(artifact, tmp_path / "c", max_num_seqs=100_000)
    assert not (tmp_path / "c").exists()


def test_export_refuses_an_unknown_decode_mode(artifact: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--decode must be auto, score or generate"):
        _export(artifact, tmp_path / "bundle", decode="sample")
    assert not (tmp_path / "bundle").exists()


def test_tampered_bundle_is_refused(artifact: Path, tmp_path: Path) -> None:
    bundle = _export(artifact, tmp_path / "bundle").path
    (bundle / "serving.json").write_text(
        (bundle / "serving.json").read_text().replace("600", "6000")
    )
    with pytest.raises(ArtifactError, match=r"serving\.json was modified"):
        load_bundle(bundle, ServerConfig(api_keys=(KEY,)))


def _fake_vllm(seen: list[dict[str, Any]]) -> Any:
    """A vLLM stand-in: echoed scoring requests get log-probabilities favouring " tech";
    generation requests get the second allowed choice."""
    fake = FastAPI()

    @fake.get("/health")
    async def health() -> dict[str, str]:
        return {}

    @fake.post("/v1/completions")
    async def completions(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append({**body, "auth": request.headers.get("authorization")})
        if body.get("echo"):
            choices = []
            for index, text in enumerate(body["prompt"]):
                label = " tech" if text.endswith(" tech") else " billing"
                start = len(text) - len(label)
                choices.append(
                    {
                        "index": index,
                        "text": "",
                        "logprobs": {
                            "tokens": [text[:start], label],
                            "token_logprobs": [None, -0.1 if label == " tech" else -2.5],
                            "text_offset": [0, start],
                        },
                    }
                )
            return {"choices": choices, "usage": {"prompt_tokens": 80, "completion_tokens": 2}}
        return {
            "choices": [{"text": body["structured_outputs"]["choice"][1], "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 40, "completion_tokens": 2},
        }

    return fake


def test_served_bundle_scores_labels_on_vllm(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, Any]] = []
    bundle = _export(artifact, tmp_path / "bundle").path
    with serve(_fake_vllm(seen)) as vllm_url:
        monkeypatch.setenv("LMFORGE_VLLM_URL", vllm_url)
        monkeypatch.setenv("VLLM_API_KEY", "vllm-secret-value")
        monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
        with serve(create_app(bundle)) as url:
            headers = {"Authorization": f"Bearer {KEY}"}
            assert httpx.get(f"{url}/ready", headers=headers).status_code == 200
            answer = httpx.post(
                f"{url}/v1/programs/triage", json={"ticket": "it crashes"}, headers=headers
            )
        monkeypatch.setenv("LMFORGE_VLLM_URL", "http://127.0.0.1:9")  # nothing listens there
        with serve(create_app(bundle)) as url:
            not_ready = httpx.get(f"{url}/ready", headers=headers)
    assert not_ready.status_code == 503
    assert (
        "vLLM at http://127.0.0.1:9/health is not reachable" in not_ready.json()["error"]["message"]
    )
    assert answer.status_code == 200 and answer.json() == {"team": "tech"}
    # the label probabilities: e^-0.1 / (e^-0.1 + e^-2.5)
    assert float(answer.headers["X-LMForge-Confidence"]) == pytest.approx(0.917, abs=0.001)
    (request,) = seen
    assert request["model"] == "triage" and request["echo"] is True
    billing, tech = request["prompt"]  # the prompt with each label appended
    assert billing.endswith("Team: billing") and tech.endswith("Team: tech")
    prompt = billing
    assert prompt.index("charged twice") < prompt.index("it crashes")  # static prefix first
    assert request["auth"] == "Bearer vllm-secret-value"


@pytest.mark.parametrize("where", ["artifact", "export"])
def test_served_bundle_sends_choice_constraints_to_vllm_when_generating(
    artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from lmforge.scoring import set_decode

    if where == "artifact":  # the program was saved generating
        set_decode(lf.load(artifact), "generate").save(artifact)
        bundle = _export(artifact, tmp_path / "bundle").path
    else:  # `lmforge export --decode generate` of a program that scores
        bundle = _export(artifact, tmp_path / "bundle", decode="generate").path
        assert json.loads((bundle / "serving.json").read_text())["decode"] == "generate"
    seen: list[dict[str, Any]] = []
    with serve(_fake_vllm(seen)) as vllm_url:
        monkeypatch.setenv("LMFORGE_VLLM_URL", vllm_url)
        monkeypatch.setenv("VLLM_API_KEY", "vllm-secret-value")
        monkeypatch.setenv("LMFORGE_API_KEYS", KEY)
        with serve(create_app(bundle)) as url:
            answer = httpx.post(
                f"{url}/v1/programs/triage",
                json={"ticket": "it crashes"},
                headers={"Authorization": f"Bearer {KEY}"},
            )
    assert answer.status_code == 200 and answer.json() == {"team": "tech"}
    (request,) = seen
    assert request["model"] == "triage" and request["max_tokens"] == 256
    assert request["structured_outputs"] == {"choice": [" billing", " tech"]}
    assert request["prompt"].index("charged twice") < request["prompt"].index("it crashes")
    assert request["auth"] == "Bearer vllm-secret-value"


def test_readme_says_limits_are_per_replica_with_the_arithmetic(
    artifact: Path, tmp_path: Path
) -> None:
    # The rate limit is counted per process: k8s replicas multiplied it, and nothing said so.
    bundle = _export(artifact, tmp_path / "bundle").path
    readme = " ".join((bundle / "README.md").read_text().split())
    deployment = next(yaml.safe_load_all((bundle / "k8s" / "program.yaml").read_text()))
    replicas = deployment["spec"]["replicas"]
    server = json.loads((bundle / "serving.json").read_text())["server"]
    rate, burst = server["rate_limit_per_minute"], server["rate_limit_burst"]
    assert replicas >= 2
    assert "These limits are per replica (per process), not global." in readme
    assert f"runs {replicas} replicas" in readme
    assert f"{replicas} x {rate:g} = {replicas * rate:g} requests/minute" in readme
    assert f"bursts of {replicas} x {burst} = {replicas * burst}" in readme
    assert "belong to the gateway" in readme and "give each G / N" in readme
    assert f"`--rate-limit-per-minute {600 / replicas:g}`" in readme
    for option in ("--header-timeout", "--max-connections", "--keep-alive-timeout"):
        assert option in readme


def test_cli_export_and_serve_options(artifact: Path, tmp_path: Path) -> None:
    from lmforge.cli.main import _COMMAND_MODULES, app
    from typer.testing import CliRunner

    assert "deploy" in _COMMAND_MODULES
    import lmforge.cli.deploy  # noqa: F401  (registers the commands)

    runner = CliRunner()
    out = tmp_path / "cli-bundle"
    args = [
        "export",
        str(artifact),
        "--target",
        "vllm",
        "--out",
        str(out),
        "--model-config",
        str(tmp_path / "config.json"),
        "--gpu",
        "H100",
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "fits" in first.output and (out / "vllm.yaml").is_file()
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--force" in again.output


@pytest.mark.local_model
def test_tryout_serves_the_bundle_with_the_embedded_model(artifact: Path, tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from lmforge.targets.tryout import tryout

    result = tryout(
        artifact, tmp_path / "tryout-bundle", {"ticket": "I was charged twice for my order"}
    )
    assert (result.bundle / "vllm.yaml").is_file() and result.files >= 10
    assert result.answer["team"] in ("billing", "tech")


def test_lora_adapter_is_served_through_vllm_lora_modules(artifact: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    bundle = _export(artifact, tmp_path / "bundle", lora=adapter).path
    engine = yaml.safe_load((bundle / "vllm.yaml").read_text())
    assert engine["enable-lora"] is True and engine["max-lora-rank"] == 8
    assert engine["lora-modules"] == ["triage-lora=/bundle/adapters/triage-lora"]
    assert (bundle / "adapters/triage-lora/adapter_model.safetensors").read_bytes() == b"\0" * 64
    serving = json.loads((bundle / "serving.json").read_text())
    assert serving["predictors"]["self"]["served_model"] == "triage-lora"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["adapter"]["rank"] == 8
    assert "adapters/triage-lora/adapter_config.json" in manifest["files"]
    with pytest.raises(UsageError, match="LoRA adapter folder"):
        _export(artifact, tmp_path / "bad", lora=tmp_path)
    # Run on this machine: vLLM finds the adapter in the bundle at its own path.
    here = tmp_path / "here"
    _export(artifact, here, lora=adapter, bundle_mount=str(here))
    engine = yaml.safe_load((here / "vllm.yaml").read_text())
    assert engine["lora-modules"] == [f"triage-lora={here}/adapters/triage-lora"]
    assert (here / "adapters/triage-lora/adapter_config.json").is_file()
    compose = yaml.safe_load((here / "compose.yaml").read_text())["services"]["vllm"]
    assert compose["command"] == ["--config", f"{here}/vllm.yaml"]
    assert f"./:{here}:ro" in compose["volumes"]
    for mount in ("bundle", "/"):
        with pytest.raises(UsageError, match="bundle-mount"):
            _export(artifact, tmp_path / "relative", lora=adapter, bundle_mount=mount)


def test_k8s_vllm_pod_finds_the_lora_adapter_where_vllm_yaml_points(
    artifact: Path, tmp_path: Path
) -> None:
    kubernetes = pytest.importorskip("kubernetes")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8, "target_modules": ["q_proj"]}))
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    bundle = _export(artifact, tmp_path / "bundle", lora=adapter, image="reg.example/triage:1").path
    api = kubernetes.client.ApiClient()
    documents = list(yaml.safe_load_all((bundle / "k8s/vllm.yaml").read_text()))
    deployment = next(_k8s(api, d) for d in documents if d and d["kind"] == "Deployment")
    pod = deployment.spec.template.spec
    # vLLM reads its config from the ConfigMap: the same lora-modules as the bundle's vllm.yaml
    config = next(d for d in documents if d and d["kind"] == "ConfigMap")
    engine = yaml.safe_load(config["data"]["vllm.yaml"])
    name, _, path = engine["lora-modules"][0].partition("=")
    assert name == "triage-lora" and path == "/bundle/adapters/triage-lora"
    # the init container copies the adapters out of the program image (which holds the bundle
    # at /bundle, see the Dockerfile) into a volume the vLLM container mounts at that path
    (init,) = pod.init_containers
    assert init.image == "reg.example/triage:1"
    assert "COPY --chown=lmforge:lmforge . /bundle" in (bundle / "Dockerfile").read_text()
    assert init.command[:2] == ["cp", "-R"] and init.command[2] == "/bundle/adapters/."
    (copied_into,) = [m for m in init.volume_mounts if m.mount_path == init.command[3].rstrip("/")]
    vllm = pod.containers[0]
    (served_from,) = [m for m in vllm.volume_mounts if m.name == copied_into.name]
    assert served_from.read_only and path.startswith(served_from.mount_path + "/")
    assert any(v.name == copied_into.name and v.empty_dir is not None for v in pod.volumes)
    # without an adapter there is nothing to copy
    plain = _export(artifact, tmp_path / "plain").path
    assert "initContainers" not in (plain / "k8s/vllm.yaml").read_text()


def test_bundle_carries_the_lora_files_its_program_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "lora.gguf"
    gguf.write_bytes(b"GGUF-lora")
    sig = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
    program = lf.Predict(sig, lm=lf.LM("local/gemma-3-270m", lora=gguf, cache=False))
    artifact = tmp_path / "tuned" / "triage@gemma.json"
    artifact.parent.mkdir()
    (artifact.parent / "config.json").write_text(json.dumps(GEMMA))
    program.save(artifact)
    options = ExportOptions(target="vllm", model_config=artifact.parent / "config.json", gpu="L4")
    bundle = export_bundle(artifact, tmp_path / "bundle", options).path
    relative = json.loads(artifact.read_text())["predictors"]["self"]["lm"]["lora"]
    assert (bundle / relative).read_bytes() == b"GGUF-lora"
    monkeypatch.setenv("LMFORGE_API_KEYS", "k" * 20)
    loaded, _ = load_bundle(bundle, artifact_lms=True)
    assert Path(str(loaded.lm.lora)) == bundle / relative
