"""Log lines a client cannot forge.

A request path such as ``/v1/programs/x%0aFAKE`` reaches the server decoded, with a real
line feed in it; logged as is, it writes a second, made-up line into the log. Everything
the server logs goes through :func:`escape_controls` (the access line) or
:class:`OneLineFormatter` (every record under ``lmforge serve``), which turn CR, LF, the
other C0 and C1 control characters and the Unicode line and paragraph separators into
visible escapes (``\\n``, ``\\x1b``, ``\\u2028``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["LOG_FORMAT", "OneLineFormatter", "escape_controls", "log_config"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 (tab included), DEL, C1 (NEL included) and U+2028/U+2029: all that str.splitlines or a
# terminal treats as a line break or a control sequence.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Continuation lines of a traceback start with this, so none of them can pass for a record.
_CONTINUATION = "\n  | "


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def escape_controls(text: str) -> str:
    """``text`` with its control characters and line separators written as escapes."""
    return _CONTROLS.sub(_escape, text)


class OneLineFormatter(logging.Formatter):
    """A formatter whose records cannot hold a forged line.

    The message, arguments included, is escaped onto one line. A traceback (or stack)
    keeps its lines for readability, each prefixed with ``"  | "`` and escaped, so a line
    in an exception message never looks like a record of its own.
    """

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        blocks = [record.exc_text] if record.exc_text else []
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        for block in blocks:
            text += "".join(_CONTINUATION + escape_controls(line) for line in block.splitlines())
        return text


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A :func:`logging.config.dictConfig` document (uvicorn's ``log_config``): every
    logger, uvicorn's included, writes one-line records to stderr."""
    handler = {"handlers": ["stderr"], "level": level, "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"one_line": {"()": OneLineFormatter, "fmt": LOG_FORMAT}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "one_line",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"uvicorn": handler, "uvicorn.error": {"level": level}},
        "root": {"handlers": ["stderr"], "level": level},
    }
