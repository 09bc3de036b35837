"""``OpenAIFinetune`` against a local fake of the files + fine_tuning.jobs endpoints over
real HTTP (the official SDK's code path runs): upload, job, polling with backoff, a
restart mid-poll that resumes the same job, a failed job, and cancel."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("openai")

from lmforge.finetune import TrainingData, TrainingExample
from lmforge.optimizers.finetune import FinetuneJobError, OpenAIFinetune

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "acceptance" / "fixtures"))
from fake_openai_ft import FakeFineTuningAPI


@pytest.fixture
def api() -> Iterator[FakeFineTuningAPI]:
    server = FakeFineTuningAPI(polls_to_finish=3).start()
    yield server
    server.stop()


def _data() -> TrainingData:
    examples = [
        TrainingExample(
            "self", ({"role": "user", "content": f"ticket {i}"},), f"ticket {i}", f" team{i % 2}"
        )
        for i in range(10)
    ]
    return TrainingData.build(examples, validation_fraction=0.2, seed=0)


def _finetuner(api: FakeFineTuningAPI, **kwargs: object) -> OpenAIFinetune:
    return OpenAIFinetune(
        base_url=api.base_url,
        api_key="sk-test",
        poll_interval=0.01,
        max_poll_interval=0.05,
        **kwargs,
    )


def test_job_flow_uploads_chat_jsonl_and_returns_the_ft_model(
    api: FakeFineTuningAPI, tmp_path: Path
) -> None:
    data = _data()
    sleeps: list[float] = []
    tuned = _finetuner(api, sleep=sleeps.append, hyperparameters={"n_epochs": 2}).train(
        data, tmp_path, seed=3, progress=False
    )
    assert tuned.lm.model.startswith("openai/ft:gpt-4o-mini-2024-07-18:fake-org::")
    assert (
        tuned.meta["job_id"] in api.jobs and tuned.meta["training_data_hash"] == data.content_hash
    )
    job = api.jobs[tuned.meta["job_id"]]
    assert job["hyperparameters"]["n_epochs"] == 2 and job["seed"] == 3
    train_file = api.files[job["training_file"]]
    assert train_file["purpose"] == "fine-tune"
    assert train_file["content"].decode() == data.jsonl("train", "chat")
    assert api.files[job["validation_file"]]["content"].decode() == data.jsonl("validation", "chat")
    assert len(sleeps) == 2 and all(0 < s <= 0.05 for s in sleeps)
    state = json.loads((tmp_path / "job.json").read_text())
    assert state["status"] == "succeeded" and state[
        "fine_tuned_model"
    ] == tuned.lm.model.removeprefix("openai/")


def test_backoff_grows_while_the_job_does_not_change(
    api: FakeFineTuningAPI, tmp_path: Path
) -> None:
    api.polls_to_finish = 9
    sleeps: list[float] = []
    _finetuner(api, sleep=sleeps.append).train(_data(), tmp_path, progress=False)
    running = sleeps[2:]  # after validating_files -> queued -> running the status stays
    assert running == sorted(running) and running[-1] == 0.05 and running[0] < running[-1]


def test_a_restart_mid_poll_resumes_the_same_job(api: FakeFineTuningAPI, tmp_path: Path) -> None:
    api.polls_to_finish = 10_000  # never finishes while the first process runs
    data = _data()
    data.write(tmp_path / "data")
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from lmforge.finetune import TrainingData
        from lmforge.optimizers.finetune import OpenAIFinetune
        data = TrainingData.read({str(tmp_path / "data")!r})
        finetuner = OpenAIFinetune(base_url={api.base_url!r}, api_key="sk-test",
                                   poll_interval=0.02, max_poll_interval=0.02)
        finetuner.train(data, Path({str(tmp_path / "work")!r}), progress=False)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not any(n >= 3 for n in api.polls.values()):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
            assert time.monotonic() < deadline, "the first process never polled"
            time.sleep(0.02)
    finally:
        child.kill()
        child.wait()
    (job_id,) = api.jobs
    assert json.loads((tmp_path / "work" / "job.json").read_text())["job_id"] == job_id
    uploads = len(api.files)
    api.polls_to_finish = api.polls[job_id] + 2
    tuned = _finetuner(api).train(
        TrainingData.read(tmp_path / "data"), tmp_path / "work", progress=False
    )
    assert api.created == 1 and len(api.files) == uploads  # no second job, no re-upload
    assert tuned.meta["job_id"] == job_id and tuned.lm.model.endswith(job_id.split("-")[1])


def test_a_failed_job_raises_with_the_providers_reason(tmp_path: Path) -> None:
    server = FakeFineTuningAPI(polls_to_finish=2, fail_jobs=True).start()
    try:
        with pytest.raises(
            FinetuneJobError, match="failed: The training file has too few examples"
        ):
            _finetuner(server).train(_data(), tmp_path, progress=False)
        assert server.created == 1
    finally:
        server.stop()


def test_cancel_stops_the_checkpointed_job(api: FakeFineTuningAPI, tmp_path: Path) -> None:
    api.polls_to_finish = 10_000
    finetuner = _finetuner(api, timeout=0.05)
    with pytest.raises(FinetuneJobError, match="still"):
        finetuner.train(_data(), tmp_path, progress=False)
    assert finetuner.cancel(tmp_path) == "cancelled"
    with pytest.raises(FinetuneJobError, match="cancelled"):
        finetuner.train(_data(), tmp_path, progress=False)


def test_real_endpoints_are_refused_while_the_network_is_blocked(tmp_path: Path) -> None:
    from lmforge.errors import UsageError

    with pytest.raises(UsageError, match="blocked"):
        OpenAIFinetune(api_key="sk-test").train(_data(), tmp_path, progress=False)
