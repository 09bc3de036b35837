"""Helpers shared by the reliability tests: suite size, a uvicorn server in a thread, and
a reply function that plays a well-behaved chat model for every signature the tests use."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

FULL_ENV = "LMFORGE_RELIABILITY_FULL"
TEAMS = ("billing", "technical", "shipping")
WORDS = {
    "billing": "invoice refund charge",
    "technical": "crash error login",
    "shipping": "parcel courier late",
}


def full_size() -> bool:
    """True when the runner asks for the full-size suite (``LMFORGE_RELIABILITY_FULL=1``)."""
    return os.environ.get(FULL_ENV, "") == "1"


def scaled(reduced: int, full: int) -> int:
    """``full`` under the full-size suite, else ``reduced`` (the default pytest run)."""
    return full if full_size() else reduced


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_in_thread(app: Any, config: Any = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL.

    With a ``ServerConfig``, uvicorn gets the settings ``lmforge serve`` uses (connection
    cap, header-read timeout).
    """
    import uvicorn

    port = free_port()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "off"}
    if config is None:
        uvicorn_settings = uvicorn.Config(app, host="127.0.0.1", port=port, **options)
    else:
        from lmforge.targets.connections import uvicorn_config

        uvicorn_settings = uvicorn_config(app, config, host="127.0.0.1", port=port, **options)
    server = uvicorn.Server(uvicorn_settings)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the program server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def team_for(ticket: str) -> str:
    """The team whose words the ticket contains (``billing`` when none does)."""
    return next(
        (t for t, words in WORDS.items() if any(w in ticket for w in words.split())), "billing"
    )


def chat_reply(prompt: str) -> str:
    """Answer a ChatAdapter prompt like a perfect model: routes tickets, and answers the
    optimizers' own proposal and summary prompts with a plausible instruction."""
    if "[[ ## proposed_instruction ## ]]" in prompt:
        return (
            "[[ ## proposed_instruction ## ]]\nRoute the support ticket to the team that owns "
            "its topic: billing, technical or shipping.\n\n[[ ## completed ## ]]"
        )
    if "[[ ## summary ## ]]" in prompt:
        return "[[ ## summary ## ]]\nShort customer support tickets.\n\n[[ ## completed ## ]]"
    tickets = re.findall(r"\[\[ ## ticket ## \]\]\n(.*?)\n", prompt)
    team = team_for(tickets[-1]) if tickets else "billing"
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## completed ## ]]"


REPORT_ENV = "LMFORGE_RELIABILITY_REPORT"


def record(check: str, **figures: Any) -> None:
    """Append a check's key figures to the runner's report file (a no-op outside the runner)."""
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    import json

    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"check": check, **figures}, default=str, sort_keys=True) + "\n")
