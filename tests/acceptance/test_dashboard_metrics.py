"""The compose bundle's monitoring: every Grafana panel queries metrics that a live
program server exports (checked against a real /metrics scrape), and Prometheus scrapes
the program service with an API key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
import httpx
import lmforge as lf
import yaml
from lmforge.targets import ServerConfig, create_app, reference_stats
from lmforge.targets.export import ExportOptions, export_bundle
from lmforge.targets.request_log import RequestLogSettings
from lmforge.testing import FunctionLM

from ._serving import serve

KEY = "dashboard-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
SIG = lf.Signature.parse("ticket: str -> team: Literal['billing', 'tech']")
METRIC = re.compile(r"\blmforge_[a-z_]+\b")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    artifact = tmp_path / "triage.json"
    lf.Predict(SIG).save(artifact)
    options = ExportOptions(target="managed", model="openai/gpt-4o-mini")
    return export_bundle(artifact, tmp_path / "bundle", options).path


def _queries(dashboard: dict[str, object]) -> list[str]:
    panels = dashboard["panels"]
    assert isinstance(panels, list) and panels
    queries = [t["expr"] for panel in panels for t in panel["targets"]]
    variables = dashboard["templating"]["list"]  # type: ignore[index]
    return queries + [v["query"]["query"] for v in variables]


def test_every_panel_queries_a_metric_the_server_exports(bundle: Path, tmp_path: Path) -> None:
    dashboard = json.loads((bundle / "monitoring/grafana/dashboards/lmforge.json").read_text())
    queries = _queries(dashboard)
    wanted = {name for query in queries for name in METRIC.findall(query)}
    for needed in ("answers_total", "drift_score", "feedback_score", "request_latency"):
        assert any(needed in name for name in wanted), needed

    rows = [{"ticket": "refund " + "x" * (i % 7), "team": "billing"} for i in range(40)]
    program = lf.Predict(
        SIG, lm=FunctionLM(lambda r: "[[ ## team ## ]]\nbilling\n\n[[ ## completed ## ]]")
    )
    config = ServerConfig(
        name="triage",
        api_keys=(KEY,),
        rate_limit_burst=500,
        reference_stats=reference_stats(SIG, rows),
        request_log=RequestLogSettings(url=str(tmp_path / "log.db"), feedback_sample=0.5),
    )
    app = create_app(program, config)
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        ids = [
            client.post("/v1/programs/triage", json={"ticket": r["ticket"]}).headers["x-request-id"]
            for r in rows
        ]
        assert client.post("/v1/programs/triage", json={"ticket": 3}).status_code == 422
        client.post("/v1/programs/triage/feedback", json={"request_id": ids[0], "score": 1})
        client.post("/v1/programs/triage", json={"ticket": "x"}, headers={"Authorization": ""})
        scrape = client.get("/metrics").text
    app.state.feedback.close()
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in scrape.splitlines()
        if line and not line.startswith("#")
    }
    missing = sorted(name for name in wanted if name not in exported)
    assert not missing, f"panels query metrics the server does not export: {missing}"


def test_prometheus_and_grafana_provisioning_fit_together(bundle: Path) -> None:
    prometheus = yaml.safe_load((bundle / "monitoring/prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["program:8080"]
    assert job["authorization"]["credentials_file"] == "/tmp/metrics_key"
    source = yaml.safe_load(
        (bundle / "monitoring/grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    uid = source["datasources"][0]["uid"]
    dashboard = json.loads((bundle / "monitoring/grafana/dashboards/lmforge.json").read_text())
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {uid}
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    provider = yaml.safe_load(
        (bundle / "monitoring/grafana/provisioning/dashboards/lmforge.yaml").read_text()
    )
    compose = yaml.safe_load((bundle / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounted = {v.split(":")[1] for v in grafana["volumes"]}
    assert provider["providers"][0]["options"]["path"] in mounted
    assert compose["services"]["prometheus"]["profiles"] == ["monitoring"]
    assert "request-log" not in compose["volumes"]  # the log is off unless asked for
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]


def test_promtool_accepts_the_config_and_every_panel_query(bundle: Path, tmp_path: Path) -> None:
    """Prometheus' own checker: the scrape config, and each panel's PromQL as a rule."""
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    key = tmp_path / "metrics_key"
    key.write_text("k" * 32)
    config = (bundle / "monitoring/prometheus.yml").read_text()
    (tmp_path / "prometheus.yml").write_text(config.replace("/tmp/metrics_key", str(key)))
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    dashboard = json.loads((bundle / "monitoring/grafana/dashboards/lmforge.json").read_text())
    panel_queries = [q for q in _queries(dashboard) if not q.startswith("label_values")]
    rules = {
        "groups": [
            {
                "name": "panels",
                "rules": [
                    {"record": f"panel:query_{i}", "expr": q.replace("$program", ".*")}
                    for i, q in enumerate(panel_queries)
                ],
            }
        ]
    }
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(panel_queries)} rules found" in checked.stdout


def test_a_real_prometheus_scrapes_the_server_and_every_panel_has_data(
    bundle: Path, tmp_path: Path
) -> None:
    """The bundle's scrape config (bearer key from a file) against a live server, then
    each panel's query through Prometheus' API: every one returns series."""
    import shutil
    import socket
    import subprocess
    import time

    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    rows = [{"ticket": "refund " + "x" * (i % 7), "team": "billing"} for i in range(40)]
    program = lf.Predict(
        SIG, lm=FunctionLM(lambda r: "[[ ## team ## ]]\nbilling\n\n[[ ## completed ## ]]")
    )
    config = ServerConfig(
        name="triage",
        api_keys=(KEY,),
        rate_limit_burst=500,
        reference_stats=reference_stats(SIG, rows),
        request_log=RequestLogSettings(url=str(tmp_path / "log.db"), feedback_sample=0.5),
    )
    app = create_app(program, config)
    key = tmp_path / "metrics_key"
    key.write_text(KEY)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        prom_port = sock.getsockname()[1]
    with serve(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        ids = [
            client.post("/v1/programs/triage", json={"ticket": r["ticket"]}).headers["x-request-id"]
            for r in rows
        ]
        client.post("/v1/programs/triage/feedback", json={"request_id": ids[0], "score": 1})
        client.post("/v1/programs/triage", json={"ticket": "x"}, headers={"Authorization": ""})
        scrape_config = (
            (bundle / "monitoring/prometheus.yml")
            .read_text()
            .replace("/tmp/metrics_key", str(key))
            .replace("program:8080", url.removeprefix("http://"))
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
        )
        (tmp_path / "prometheus.yml").write_text(scrape_config)
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            dashboard = json.loads(
                (bundle / "monitoring/grafana/dashboards/lmforge.json").read_text()
            )
            queries = [q.replace("$program", ".*") for q in _queries(dashboard)[:-1]]
            api = f"http://127.0.0.1:{prom_port}/api/v1/query"
            empty: list[str] = queries
            deadline = time.monotonic() + 60
            while empty and time.monotonic() < deadline:
                time.sleep(1)
                try:
                    empty = [
                        q
                        for q in queries
                        if not httpx.get(api, params={"query": q}, timeout=5).json()["data"][
                            "result"
                        ]
                    ]
                except (httpx.HTTPError, KeyError, ValueError):
                    continue  # Prometheus still starting
        finally:
            process.terminate()
            process.wait(timeout=30)
    app.state.feedback.close()
    assert not empty, f"panels without data from a live scrape: {empty}"
