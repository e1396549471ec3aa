from .audit import AuditEvent
from .policy import PolicyRule, PolicyVersion
from .sessions import AgentSession, ApprovalDecision, ExecutionResult, Message, ToolCall
from .tokens import ApiToken
from .verification import ChainVerification
from .webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "AgentSession",
    "ApiToken",
    "ApprovalDecision",
    "AuditEvent",
    "ChainVerification",
    "ExecutionResult",
    "Message",
    "PolicyRule",
    "PolicyVersion",
    "ToolCall",
    "WebhookDelivery",
    "WebhookEndpoint",
]
