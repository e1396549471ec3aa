from .audit import AuditEvent
from .sessions import AgentSession, ApprovalDecision, ExecutionResult, Message, ToolCall

__all__ = [
    "AgentSession",
    "ApprovalDecision",
    "AuditEvent",
    "ExecutionResult",
    "Message",
    "ToolCall",
]
