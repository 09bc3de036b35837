"""A tiny OpenAI-compatible chat server on 127.0.0.1 for the MLflow tests.

It answers ``POST /v1/chat/completions`` in the chat adapter's field-marker format for the
``ticket -> team, priority: int`` program (``billing`` when the ticket mentions a refund,
else ``technical``), and records each request's model and Authorization header. A model
served by ``mlflow models serve`` in another process reaches it over loopback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def answer(prompt: str) -> str:
    ticket = prompt.rsplit("[[ ## ticket ## ]]", 1)[-1]
    team = "billing" if "refund" in ticket else "technical"
    return f"[[ ## team ## ]]\n{team}\n\n[[ ## priority ## ]]\n2\n\n[[ ## completed ## ]]"


@contextmanager
def fake_openai() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Serve on a free loopback port; yields the base URL (``.../v1``) and the request log."""
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            seen.append({"model": body.get("model"), "auth": self.headers.get("Authorization")})
            prompt = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
            data = json.dumps(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model"),
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": answer(prompt)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
