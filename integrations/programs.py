"""Loading a compiled program for a batch run, on this machine or on a Spark executor.

A batch run names the model's endpoint at run time (``api_base``) rather than trusting one
recorded in the artifact, so the same artifact runs against whichever OpenAI-compatible
server the job is pointed at. Keys are never part of the spec: each process reads them from
its own environment (``OPENAI_API_KEY``, ...).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import lmforge as lf

__all__ = ["ProgramSpec", "configure_lms"]


def configure_lms(program: lf.Module, *, model: str | None, api_base: str | None) -> None:
    """Point the program's predictors at ``model`` and/or ``api_base``.

    ``model`` replaces every predictor's LM; ``api_base`` alone keeps each predictor's
    recorded model and settings and sends its calls to that endpoint. Predictors saved
    without an LM use the default model ($LMFORGE_MODEL, else the embedded local model).
    """
    if model is not None:
        program.set_lm(lf.LM(model, api_base=api_base))
        return
    default: lf.LM | None = None
    for predictor in program.predictors():
        lm = predictor.lm
        if isinstance(lm, lf.LM):
            if api_base:
                config = {**lm.config(include_endpoint=False), "api_base": api_base}
                predictor.lm = lf.LM.from_config(config, allow_endpoints=True)
        elif lm is None:
            default = default or lf.LM(api_base=api_base)
            predictor.lm = default


@dataclass(frozen=True)
class ProgramSpec:
    """Everything a process needs to rebuild the program: the artifact's bytes (so an
    executor on another machine needs no shared disk) and how to point its LMs.

    Equal specs name the same program, so a process rebuilds it once (see :meth:`load`).
    """

    name: str
    digest: str
    data: bytes = field(compare=False, repr=False)
    model: str | None = None
    api_base: str | None = field(default=None, repr=False)
    allow_endpoints: bool = False
    trust: tuple[str, ...] = ()
    source: str | None = None
    cache: bool = True

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str | None = None,
        api_base: str | None = None,
        allow_endpoints: bool = False,
        trust: Sequence[str] = (),
        cache: bool = True,
    ) -> ProgramSpec:
        """The spec of the artifact at ``path`` (read now, on the driver)."""
        source = Path(path)
        try:
            data = source.read_bytes()
        except FileNotFoundError:
            raise lf.ArtifactError(f"{source}: no such artifact file") from None
        except OSError as exc:
            raise lf.ArtifactError(f"{source}: cannot read it ({exc.strerror})") from None
        return cls(
            name=source.name,
            digest=hashlib.sha256(data).hexdigest(),
            data=data,
            model=model,
            api_base=api_base,
            allow_endpoints=allow_endpoints,
            trust=tuple(trust),
            source=str(source.resolve()),
            cache=cache,
        )

    def artifact_path(self) -> Path:
        """A path holding this artifact: the original file when this machine sees it
        unchanged (files it refers to, such as a LoRA, resolve beside it), else a copy in
        the temporary folder named by its digest."""
        if self.source and _digest_of(Path(self.source)) == self.digest:
            return Path(self.source)
        import tempfile

        from lmforge._atomic import write_bytes_atomic

        copy = Path(tempfile.gettempdir()) / "lmforge-artifacts" / self.digest / self.name
        if _digest_of(copy) != self.digest:
            write_bytes_atomic(copy, self.data)
        return copy

    def calls(self) -> contextlib.AbstractContextManager[object]:
        """The settings the program's calls run under: without the response cache when
        ``cache`` is off (rows of a batch are rarely asked twice; skipping the cache saves
        a disk write per row)."""
        return contextlib.nullcontext() if self.cache else lf.use(cache=False)

    def load(self) -> lf.Module:
        """Rebuild the program and point its LMs (see :func:`configure_lms`)."""
        program = lf.load(
            self.artifact_path(),
            allow_endpoints=self.allow_endpoints,
            trusted_modules=self.trust,
        )
        configure_lms(program, model=self.model, api_base=self.api_base)
        return program


def _digest_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
