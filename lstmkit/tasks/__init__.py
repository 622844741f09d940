"""Long-lag benchmark tasks (adding problem, temporal order 6a, copy memory) and their training.

See definitions.py for the exact definitions and train.py for the success criteria.
"""

from lstmkit.tasks.definitions import (
    TASKS,
    AddingProblem,
    Batch,
    CopyMemory,
    Evaluation,
    Task,
    TemporalOrder,
    make_task,
)
from lstmkit.tasks.train import TaskConfig, TaskModel, TaskResult, sweep, train_task

__all__ = [
    "TASKS",
    "AddingProblem",
    "Batch",
    "CopyMemory",
    "Evaluation",
    "Task",
    "TaskModel",
    "TemporalOrder",
    "TaskConfig",
    "TaskResult",
    "make_task",
    "sweep",
    "train_task",
]
