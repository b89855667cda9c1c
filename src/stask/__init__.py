"""stask: background tasks with live progress, stored in SQLite, PostgreSQL or MariaDB."""

from stask.core.context import TaskContext
from stask.core.facade import Stask
from stask.core.worker import BaseWorker
from stask.errors import Retry, StaskError
from stask.models import Priority, Status, Task, WorkerInfo

__version__ = "0.1.0"

__all__ = [
    "BaseWorker",
    "Priority",
    "Retry",
    "Stask",
    "StaskError",
    "Status",
    "Task",
    "TaskContext",
    "WorkerInfo",
    "__version__",
]
