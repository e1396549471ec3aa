"""agentdash's tool engine: tools, their validation, execution, approval and results.

Framework-free: nothing in this package imports Django.
"""

from tools.arguments import ToolValidationError
from tools.executor import Decision, PermissionDeniedError, ToolEvent, ToolExecutor
from tools.registry import ToolRegistry
from tools.results import (
    ExecutionResult,
    ExecutionStatus,
    ToolCall,
    ToolOutput,
    format_results_for_llm,
)
from tools.tool import Tool

__all__ = [
    "Decision",
    "ExecutionResult",
    "ExecutionStatus",
    "PermissionDeniedError",
    "Tool",
    "ToolCall",
    "ToolEvent",
    "ToolExecutor",
    "ToolOutput",
    "ToolRegistry",
    "ToolValidationError",
    "format_results_for_llm",
]
