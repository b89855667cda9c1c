"""One exception root for everything stask raises on purpose.

Each class's docstring is its default message; the CLI prints ``Error: <message>`` and exits with
``exit_code``, the REST API answers with ``http_status``.
"""

from __future__ import annotations


class StaskError(Exception):
    """stask failed."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class ConfigError(StaskError):
    """The configuration is invalid - check stask.toml and the STASK_* environment variables."""

    exit_code = 2
    http_status = 500


class ValidationError(StaskError):
    """The input is invalid."""

    exit_code = 2
    http_status = 422


class InvalidOptions(ValidationError):
    """Task options must be a JSON object of JSON values."""


class UnknownWorker(ValidationError):
    """No worker is registered under this identifier."""

    http_status = 404


class UnknownAction(ValidationError):
    """The worker has no such action."""

    http_status = 404


class InvalidQueueSetting(ValidationError):
    """Queue names are 1-100 characters, limits positive integers, and pauses end in the future."""


class WorkerDefinitionError(StaskError):
    """A worker class is defined incorrectly."""


class NotFound(StaskError):
    """The object does not exist."""

    http_status = 404


class TaskNotFound(NotFound):
    """No task has this id."""


class InvalidState(StaskError):
    """The operation is not allowed in the task's current state."""

    http_status = 409


class WorkerInactive(InvalidState):
    """The worker is inactive."""


class ResultNotFound(NotFound):
    """The task has no downloadable result file."""


class DatabaseError(StaskError):
    """The database failed."""

    http_status = 503


class DatabaseUnavailable(DatabaseError):
    """Cannot connect to the database - check STASK_DATABASE_URL and that the server is running."""


class DatabaseConflict(DatabaseError):
    """The database aborted the transaction as a deadlock victim or after a lock wait timeout -
    stask ran it again and it kept conflicting; try again, and look for long transactions that
    hold stask's rows."""

    http_status = 503


class SchemaMissing(DatabaseError):
    """The database has no stask tables - run `stask migrate` first."""


class Retry(Exception):
    """Raised by an action to run the task again later without counting it as a failure."""

    def __init__(self, after: float = 0.0, message: str | None = None) -> None:
        super().__init__(message or f"retry requested in {after:g} s")
        self.after = float(after)
