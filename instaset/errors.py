"""One exception tree for instaset.

Every error a user can see derives from :class:`InstasetError`; the CLI is the only place that
turns them into exit codes. Messages name the thing that is wrong and how to fix it, and never
contain a token or an app secret.
"""

from __future__ import annotations


class InstasetError(Exception):
    """Base of every error instaset raises on purpose."""


class ConfigError(InstasetError):
    """The config file or environment is invalid. ``str()`` is the full user-facing message,
    one problem per line, each as ``file:line: path: what (hint)``."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class PayloadError(InstasetError, ValueError):
    """A webhook body is not a usable Meta payload (answered 400)."""


class StoreError(InstasetError):
    """The database cannot be used (e.g. it is from a newer instaset version)."""


class ForeignDatabaseError(StoreError):
    """The database file belongs to something else: it has tables and no instaset schema.
    instaset refuses it rather than writing its own tables into it. ``problem`` and ``fix``
    are the two halves of the message (``doctor`` shows them apart)."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}")


class SecretsError(InstasetError):
    """A secret cannot be stored or read."""


class GraphError(InstasetError):
    """A Graph API call failed. ``code``/``subcode`` are Meta's, when Meta answered."""

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        status: int | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.subcode = subcode
        self.status = status
        self.fbtrace_id = fbtrace_id
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [self.message]
        if self.code is not None:
            parts.append(f"(code {self.code}" + (f"/{self.subcode})" if self.subcode else ")"))
        if self.status is not None:
            parts.append(f"[HTTP {self.status}]")
        return " ".join(parts)


class Throttled(GraphError):
    """Rate limited (codes 4, 17, 32, 613, 80002 or usage headers at 100 %).
    ``retry_after`` is seconds to wait, when Meta told us."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kw)  # type: ignore[arg-type]


class TokenInvalid(GraphError):
    """Code 190: the token expired or was revoked. The account needs reconnecting."""


class WindowClosed(GraphError):
    """The messaging window is closed (10/2534022, 10/2018278). Final, never retried."""


class UserUnavailable(GraphError):
    """Code 551: the person cannot be messaged. Final."""


class PermissionMissing(GraphError):
    """Code 10 (other) or 200: the app lacks a permission or access level. Final."""


class InvalidParameter(GraphError):
    """Code 100: the request was malformed or names something that does not exist. Final."""


class AlreadyReplied(GraphError):
    """Code 10900, "Activity already replied to": the comment already has its one private
    reply. Final. After a try of ours whose answer was lost, it is that try's delivery; on a
    first try, the comment was answered elsewhere (the outbox's ``already_answered``)."""


class Transient(GraphError):
    """Codes 1, 2, 5xx, timeouts and connection errors: retry with backoff.
    ``outcome_unknown`` is True when the request may have reached Meta (a timeout after
    sending), so a retry must first look for the send's echo."""

    retryable = True

    def __init__(self, message: str, *, outcome_unknown: bool = False, **kw: object) -> None:
        self.outcome_unknown = outcome_unknown
        super().__init__(message, **kw)  # type: ignore[arg-type]


class SendRefused(InstasetError):
    """A send was refused locally by the sending rules before any Graph call.
    ``reason`` is a short stable slug (``window_closed``, ``private_reply_used`` ...)."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class AIError(InstasetError):
    """Gemini failed. ``retry_after`` carries a 429's retryDelay in seconds."""

    def __init__(self, message: str, *, retryable: bool, retry_after: float | None = None):
        self.retryable = retryable
        self.retry_after = retry_after
        super().__init__(message)
