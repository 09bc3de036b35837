"""``OpenAIFinetune``: a managed fine-tuning job through the official ``openai`` SDK.

Uploads the chat JSONL (files endpoint, ``purpose="fine-tune"``), creates a fine-tuning
job, polls it with backoff and returns an LM for the resulting ``ft:...`` model. The job
id is checkpointed in the work folder (``job.json``) the moment the job exists, so a
killed compile resumes polling the same job instead of paying for a second one;
:meth:`OpenAIFinetune.cancel` cancels it. A failed or cancelled job raises an error with
the provider's reason. ``base_url`` points the SDK at any OpenAI-compatible fine-tuning
API (the test suite runs it against a local fake over real HTTP).

Adding another managed provider (Together, Fireworks, ...): write a class with the same
four members as this one (``name``, ``base_lm()``, ``config()``, ``train(data, workdir,
seed=, progress=)``), following the same steps against that provider's SDK:

1. upload ``data.jsonl("train", "chat")`` (and validation) in the provider's file format;
2. create the job and write its id to ``workdir / "job.json"`` before anything else;
3. on start, read ``job.json`` and resume polling when it is there for the same data hash;
4. poll with backoff; map the provider's terminal states to success or an error;
5. return ``TunedModel(lm=lf.LM("<litellm provider prefix>/<tuned model id>"), ...)``
   so predictors call the tuned model through the litellm backend
   (e.g. ``together_ai/<output_name>`` or ``fireworks_ai/<model>``).

Pass an instance as ``Finetune(finetuner=...)``; nothing needs registering.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lmforge as lf
from lmforge.artifact import write_json_atomic
from lmforge.errors import LMForgeError, MissingExtraError, UsageError
from lmforge.finetune import TrainingData, TunedModel

__all__ = ["FinetuneJobError", "OpenAIFinetune"]

_TERMINAL = {"succeeded", "failed", "cancelled"}


class FinetuneJobError(LMForgeError):
    """A managed fine-tuning job failed, was cancelled, or could not be followed."""


@dataclasses.dataclass
class OpenAIFinetune:
    """Fine-tune an OpenAI model (or any OpenAI-compatible fine-tuning API).

    Args:
        model: the base model to tune (a fine-tunable snapshot).
        hyperparameters: ``n_epochs``, ``batch_size``, ``learning_rate_multiplier``.
        suffix: added to the tuned model's name.
        base_url: the API's base URL (default: the SDK's, i.e. api.openai.com or
            ``$OPENAI_BASE_URL``); api_key: default ``$OPENAI_API_KEY``.
        provider: the litellm prefix of the returned LM (``openai``).
        poll_interval, max_poll_interval: first and longest wait between polls (the wait
            grows 1.5x per poll without progress).
        timeout: stop waiting after this many seconds (the job keeps running; compiling
            again with the same run directory resumes it).
    """

    model: str = "gpt-4o-mini-2024-07-18"
    hyperparameters: Mapping[str, Any] | None = None
    suffix: str | None = None
    base_url: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    provider: str = "openai"
    poll_interval: float = 10.0
    max_poll_interval: float = 120.0
    timeout: float | None = None
    sleep: Callable[[float], None] = dataclasses.field(
        default=time.sleep, repr=False, compare=False
    )

    name = "openai"

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.max_poll_interval < self.poll_interval:
            raise UsageError("poll_interval must be > 0 and at most max_poll_interval")

    def base_lm(self) -> lf.LM:
        return lf.LM(f"{self.provider}/{self.model}", api_base=self.base_url)

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "hyperparameters": dict(self.hyperparameters or {}),
            "suffix": self.suffix,
            "provider": self.provider,
        }

    # -- the job -----------------------------------------------------------------------

    def _client(self) -> Any:
        try:
            import openai
        except ImportError:
            raise MissingExtraError("openai", "finetune", "OpenAI fine-tuning") from None
        from lmforge.testing import network_blocked

        if network_blocked() and not _is_loopback(self.base_url):
            raise UsageError("real network calls are blocked here; point base_url at a local fake")
        return openai.OpenAI(
            api_key=self.api_key or os.environ.get("OPENAI_API_KEY"),
            base_url=self.base_url,
            max_retries=2,
        )

    def train(
        self, data: TrainingData, workdir: Path, *, seed: int = 0, progress: bool = True
    ) -> TunedModel:
        """Run (or resume) the job for ``data``; returns the tuned model."""
        workdir = Path(workdir)
        client = self._client()
        state = self._state(workdir, data)
        if state.get("job_id") is None:
            state = self._start(client, workdir, data, state, seed)
        job = self._wait(client, state["job_id"], progress)
        if job.status != "succeeded" or not job.fine_tuned_model:
            error = getattr(job, "error", None)
            reason = getattr(error, "message", None) or job.status
            raise FinetuneJobError(
                f"fine-tuning job {job.id} {job.status}: {reason}; fix the cause and compile again "
                f"with a new run directory (or delete {workdir / 'job.json'})"
            )
        state.update(
            status=job.status,
            fine_tuned_model=job.fine_tuned_model,
            trained_tokens=job.trained_tokens,
        )
        write_json_atomic(workdir / "job.json", state)
        lm = lf.LM(
            f"{self.provider}/{job.fine_tuned_model}", api_key=self.api_key, api_base=self.base_url
        )
        meta = {
            "finetuner": self.name,
            "provider": self.provider,
            "base_model": self.model,
            "fine_tuned_model": job.fine_tuned_model,
            "job_id": job.id,
            "training_file": state.get("training_file"),
            "validation_file": state.get("validation_file"),
            "hyperparameters": _plain(getattr(job, "hyperparameters", None))
            or dict(self.hyperparameters or {}),
            "trained_tokens": job.trained_tokens,
            "training_data_hash": data.content_hash,
            "seed": seed,
            "wall_s": round(time.time() - float(state.get("started_at") or time.time()), 1),
        }
        return TunedModel(lm=lm, base_model=self.model, meta=meta)

    def cancel(self, workdir: str | Path) -> str:
        """Cancel the job checkpointed in ``workdir``; returns its status afterwards."""
        path = Path(workdir) / "job.json"
        try:
            job_id = json.loads(path.read_text(encoding="utf-8"))["job_id"]
        except (OSError, ValueError, KeyError):
            raise UsageError(f"{path} records no fine-tuning job to cancel") from None
        job = self._client().fine_tuning.jobs.cancel(job_id)
        return str(job.status)

    def _state(self, workdir: Path, data: TrainingData) -> dict[str, Any]:
        path = workdir / "job.json"
        fresh = {"data": data.content_hash, "config": self.config(), "job_id": None}
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return fresh
        if state.get("data") != data.content_hash or state.get("config") != fresh["config"]:
            return fresh
        return dict(state)

    def _start(
        self, client: Any, workdir: Path, data: TrainingData, state: dict[str, Any], seed: int
    ) -> dict[str, Any]:
        state = dict(state)
        state["training_file"] = self._upload(
            client, "train.chat.jsonl", data.jsonl("train", "chat")
        )
        if data.validation:
            state["validation_file"] = self._upload(
                client, "validation.chat.jsonl", data.jsonl("validation", "chat")
            )
        write_json_atomic(workdir / "job.json", state)
        options: dict[str, Any] = {
            "model": self.model,
            "training_file": state["training_file"],
            "seed": seed,
        }
        if state.get("validation_file"):
            options["validation_file"] = state["validation_file"]
        if self.hyperparameters:
            options["hyperparameters"] = dict(self.hyperparameters)
        if self.suffix:
            options["suffix"] = self.suffix
        job = _api(
            lambda: client.fine_tuning.jobs.create(**options), "creating the fine-tuning job"
        )
        state.update(job_id=job.id, status=job.status, started_at=time.time())
        write_json_atomic(workdir / "job.json", state)
        return state

    @staticmethod
    def _upload(client: Any, name: str, text: str) -> str:
        uploaded = _api(
            lambda: client.files.create(file=(name, text.encode("utf-8")), purpose="fine-tune"),
            f"uploading {name}",
        )
        return str(uploaded.id)

    def _wait(self, client: Any, job_id: str, progress: bool) -> Any:
        import openai
        from lmforge import progress as _progress

        started = time.monotonic()
        interval = self.poll_interval
        last_status = None
        with _progress.task(f"fine-tuning job {job_id}", None, enabled=progress) as row:
            while True:
                try:
                    job = client.fine_tuning.jobs.retrieve(job_id)
                except (
                    openai.APIConnectionError,
                    openai.RateLimitError,
                    openai.InternalServerError,
                ):
                    job = None  # transient: keep polling, with backoff
                except openai.APIError as exc:
                    raise FinetuneJobError(
                        f"following fine-tuning job {job_id} failed: {exc}"
                    ) from None
                if job is not None:
                    if job.status in _TERMINAL:
                        return job
                    if job.status != last_status:
                        last_status, interval = job.status, self.poll_interval
                        row.update(status=str(job.status))
                    else:
                        interval = min(interval * 1.5, self.max_poll_interval)
                if self.timeout is not None and time.monotonic() - started > self.timeout:
                    raise FinetuneJobError(
                        f"fine-tuning job {job_id} is still {last_status or 'pending'} after "
                        f"{self.timeout:.0f}s; compile again with the same run directory "
                        "to keep waiting"
                    )
                self.sleep(interval)


def _api(call: Callable[[], Any], what: str) -> Any:
    import openai

    try:
        return call()
    except openai.AuthenticationError:
        raise lf.AuthenticationError(
            f"{what}: the API key was refused; set OPENAI_API_KEY"
        ) from None
    except openai.APIError as exc:
        raise FinetuneJobError(f"{what} failed: {exc}") from None


def _plain(value: Any) -> Any:
    if value is None:
        return None
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else value


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    from urllib.parse import urlparse

    return (urlparse(url).hostname or "") in ("127.0.0.1", "localhost", "::1")
