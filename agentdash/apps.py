from django.apps import AppConfig


class AgentdashConfig(AppConfig):
    name = "agentdash"
    verbose_name = "agentdash"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_in, user_logged_out

        from agentdash.live import groups, publisher

        user_logged_in.connect(groups.remember_login, dispatch_uid="agentdash-live-login")
        user_logged_out.connect(publisher.logged_out, dispatch_uid="agentdash-live-logout")
