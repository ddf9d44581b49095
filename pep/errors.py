"""One exception tree under one root, `PepError`. Every error that can end a decision carries a
reason code; the others (configuration, policy loading, listening) end start-up or a command."""

from __future__ import annotations

from pep.reasons import Reason


class PepError(Exception):
    """The root of every error pep raises on purpose. `reason` is the code a decision reports."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, detail: str, reason: Reason | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason


class TokenError(PepError):
    """The access token (or its proof of possession) failed a check."""

    reason = Reason.TOKEN_MALFORMED


class ChainError(PepError):
    """The delegation chain broke a rule."""

    reason = Reason.CHAIN_UNKNOWN_AGENT


class ControlError(PepError):
    """A risk control (lifecycle, kill switch, rate limit) refused the request."""

    reason = Reason.AGENT_DISABLED


class RequestError(PepError):
    """The request itself is malformed: answered with INVALID_ARGUMENT."""

    reason = Reason.INVALID_REQUEST


class PolicyUnavailableError(PepError):
    """No valid policy set is loaded."""

    reason = Reason.POLICY_UNAVAILABLE


class ConfigError(PepError):
    """A configuration problem, named by its key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


class PolicyLoadError(PepError):
    """One or more problems in a policy directory, each located by file and line."""

    def __init__(self, problems: list[SourceProblem], version: str | None = None) -> None:
        self.problems = problems
        # The content version that was rejected, when the files could be read.
        self.version = version
        super().__init__("\n".join(str(p) for p in problems))


class ListenError(PepError, OSError):
    """A listener could not be opened (the address is in use, say): start-up fails naming it."""

    def __init__(self, address: str, problem: str) -> None:
        super().__init__(f"cannot listen on {address}: {problem}")
        self.address = address


class SourceProblem:
    """A problem located in a file: rendered `file:line:col: message`."""

    __slots__ = ("col", "line", "message", "path")

    def __init__(self, path: str, message: str, line: int = 1, col: int = 1) -> None:
        self.path = path
        self.line = line
        self.col = col
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.message}"

    def __repr__(self) -> str:
        return f"SourceProblem({str(self)!r})"
