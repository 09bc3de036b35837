"""lmforge's error tree.

Every error lmforge raises derives from :class:`LMForgeError`. Errors from providers and
dependencies are translated once, at the backend boundary, into these types.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactError",
    "AuthenticationError",
    "BudgetExceededError",
    "ContextWindowError",
    "LMError",
    "LMForgeError",
    "LMTimeoutError",
    "MissingExtraError",
    "ParseError",
    "ProviderError",
    "RateLimitError",
    "SignatureError",
    "UsageError",
]


class LMForgeError(Exception):
    """Root of every error lmforge raises."""


class UsageError(LMForgeError, ValueError):
    """The API was called wrongly; the message says how to fix the call."""


class SignatureError(UsageError):
    """A signature string, field or type could not be understood."""


class ParseError(LMForgeError):
    """The LM's output could not be parsed into the signature's output fields.

    ``raw`` holds the full text the LM produced and ``field`` the output field that failed
    (``None`` when the output as a whole was unusable, e.g. empty).
    """

    def __init__(self, message: str, *, raw: str, field: str | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_parse_error, (str(self), self.raw, self.field))


def _rebuild_parse_error(message: str, raw: str, field: str | None) -> ParseError:
    return ParseError(message, raw=raw, field=field)


class LMError(LMForgeError):
    """A language-model call failed.

    ``retryable`` says whether retrying the same request may succeed; ``retry_after`` is
    the delay in seconds the provider asked for, when it said.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable


class RateLimitError(LMError):
    """The provider rejected the call for rate or quota reasons (HTTP 429)."""

    retryable = True


class LMTimeoutError(LMError):
    """The call did not finish in time."""

    retryable = True


class ContextWindowError(LMError):
    """The prompt plus requested output does not fit the model's context window."""


class AuthenticationError(LMError):
    """The provider refused the credentials (HTTP 401/403)."""


class ProviderError(LMError):
    """Any other provider-side failure; retryable for 5xx and connection errors."""


class ArtifactError(LMForgeError):
    """An artifact file is missing, malformed, tampered with or of an unknown version."""


class MissingExtraError(LMForgeError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'lmforge[{extra}]'"
        )
        self.package = package
        self.extra = extra


class BudgetExceededError(LMForgeError):
    """A run's budget (LM calls or cost) is spent."""
