"""Root URLs. API paths work with and without a trailing slash."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from aicp import dashboard, landing, views

# The API's own routes first: Django tries patterns in order, and every request to POST /tasks used to
# fail through the admin, the dashboard and the accounts' routes before reaching its own. No two
# patterns here match the same path, so the order changes nothing else.
urlpatterns = [
    path("", include("tasks.urls")),
    path("admin/", admin.site.urls),
    re_path(r"^health/?$", views.health, name="health"),
    re_path(r"^dashboard/?$", dashboard.dashboard, name="dashboard"),
    path("dashboard/data.json", dashboard.dashboard_data, name="dashboard-data"),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^api/docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^api/redoc/?$", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("", landing.landing, name="landing"),
    path("", include("users.urls")),
    path("", include("agents.urls")),
    path("", include("duke.urls")),
]

# A path no route matches answers JSON like the rest of the API (the admin and dashboard keep HTML).
handler404 = "aicp.views.not_found"
