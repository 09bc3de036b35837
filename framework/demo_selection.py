"""Per-input demos: the hook through which a predictor picks its demos for each call.

A predictor with a ``demo_selector`` shows, after its fixed ``demos``, the demos the selector
returns for the call's inputs (``lmforge.modules.KNNDemos``: the training rows nearest to
the input). A selector is saved in the artifact like a nested module, as its class path and
a JSON config (never a pickle), and rebuilt when the artifact is loaded, from trusted
modules only (see :mod:`lmforge.trust`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from .errors import ArtifactError, UsageError
from .trust import import_trusted

__all__ = ["DemoSelector", "selector_from_state", "selector_state"]

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


@runtime_checkable
class DemoSelector(Protocol):
    """Picks a call's demos from its inputs; saved as ``spec_config()`` and rebuilt by the
    class method ``from_spec_config(config)``. Selectors are shared, not copied, by
    ``deepcopy``: they must not change once built."""

    def select(self, inputs: Mapping[str, Any]) -> Sequence[Mapping[str, Any]]: ...

    def spec_config(self) -> dict[str, Any]: ...


def selector_state(selector: DemoSelector) -> dict[str, Any]:
    """How to rebuild ``selector``: its class path and JSON config."""
    cls = type(selector)
    return {"type": f"{cls.__module__}:{cls.__qualname__}", "config": selector.spec_config()}


def selector_from_state(state: Any) -> DemoSelector:
    """Rebuild a selector saved by :func:`selector_state` (raises ``ArtifactError``)."""
    if not isinstance(state, Mapping) or not _REF.match(str(state.get("type", ""))):
        raise ArtifactError(
            "invalid predictor state: demo_selector must be an object with a "
            f"'package.module:Class' type; got {state!r:.80}"
        )
    module, _, qualname = str(state["type"]).partition(":")
    try:
        cls = import_trusted(module, qualname, what="demo selector")
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"cannot import the demo selector {state['type']} ({exc})") from None
    factory = getattr(cls, "from_spec_config", None)
    if not callable(factory) or not callable(getattr(cls, "select", None)):
        raise ArtifactError(f"the demo selector {state['type']} has no select/from_spec_config")
    config = state.get("config")
    if not isinstance(config, Mapping):
        raise ArtifactError("invalid predictor state: demo_selector config must be an object")
    try:
        return factory(dict(config))  # type: ignore[no-any-return]
    except (UsageError, KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"invalid demo selector {state['type']}: {exc}") from None
