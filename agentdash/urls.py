from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from agentdash import metrics, views

urlpatterns = [
    path("", views.home, name="home"),
    path("", include("agentdash.web.urls")),
    path("tools/", views.tool_list, name="tool-list"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("history/", include("agentdash.web.history_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("agentdash.api.urls")),
    path("metrics", metrics.metrics_view, name="metrics"),
]
