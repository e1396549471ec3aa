from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from agentdash import metrics, views
from agentdash.web import login

# The admin's login page is a second way to guess passwords: the same limits apply.
admin.site.login_form = login.AdminLoginForm

urlpatterns = [
    path("", views.home, name="home"),
    path("", include("agentdash.web.urls")),
    path("tools/", views.tool_list, name="tool-list"),
    path("login/", login.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("history/", include("agentdash.web.history_urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include("agentdash.api.urls")),
    path("metrics", metrics.metrics_view, name="metrics"),
]
