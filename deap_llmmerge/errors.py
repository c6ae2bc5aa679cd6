"""Errors that name the bad input. Every one of them is a one-line message for the user."""

__all__ = [
    "LLMMergeError",
    "ConfigError",
    "SourceModelError",
    "IncompatibleModelsError",
    "BenchmarkDataError",
    "InvalidGenomeError",
    "EvaluationError",
    "RunInterrupted",
    "first_line",
    "validation_message",
    "settings_from",
]


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name when the message is empty): what a
    library's multi-line error says in the one line a user gets."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LLMMergeError(Exception):
    """Base class: bad input or a failed run, reported to the user as one line."""


class ConfigError(LLMMergeError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class SourceModelError(LLMMergeError):
    """A source model cannot be loaded or has no recognisable decoder layer list."""


class IncompatibleModelsError(LLMMergeError):
    """Two source models cannot be merged part by part."""


class BenchmarkDataError(LLMMergeError, ValueError):
    """Benchmark tensors have the wrong type, shape or content."""


class InvalidGenomeError(LLMMergeError, ValueError):
    """A genome does not decode into a valid merge plan; evaluation turns it into the worst fitness."""


class EvaluationError(LLMMergeError):
    """Too many candidates of one generation failed to score: the run stops."""


class RunInterrupted(BaseException):
    """SIGINT or SIGTERM arrived: the run stops at its last checkpoint. A BaseException, as KeyboardInterrupt
    is, so that no ``except Exception`` (a candidate's failure, a worker's) can take it for an error."""

    def __init__(self, signum: int, message: str = "interrupted") -> None:
        super().__init__(message)
        self.signum = signum


def validation_message(error, hidden: tuple[str, ...] = ()) -> tuple[str, str]:
    """``(key, problem)`` of the first problem a pydantic ValidationError names, in words a user reads:
    ``("ga.mutation_rate", "Input should be less than or equal to 1, got 1.5")``; a key part in ``hidden``
    is left out; a message that names a key inside the key (``method_options.ties: ...``) names that key."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if str(part) not in hidden)
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif not first["type"].startswith("value_error") and not isinstance(first.get("input"), (dict, list)) \
            and "input" in first:
        message += f", got {first['input']!r}"
    if error.error_count() > 1:
        message += f" (and {error.error_count() - 1} more)"
    inner, _, problem = message.partition(": ")
    if key and (inner == key or inner.startswith(key + ".")):
        key, message = inner, problem
    return key, message


def settings_from(settings_class: type, **values: object):
    """``settings_class(**values)`` (a pydantic model), its first problem a one-line ConfigError."""
    from pydantic import ValidationError

    try:
        return settings_class(**values)
    except ValidationError as exc:
        key, message = validation_message(exc)
        raise ConfigError(f"{key}: {message}" if key else message) from None
