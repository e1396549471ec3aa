from django.apps import AppConfig


class AgentdashConfig(AppConfig):
    name = "agentdash"
    verbose_name = "agentdash"
