from django.apps import AppConfig


class AgentdashConfig(AppConfig):
    name = "agentdash"
    verbose_name = "agentdash"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from agentdash.live import publisher

        user_logged_out.connect(publisher.logged_out, dispatch_uid="agentdash-live-logout")
