"""The front page: public, server-rendered, linking every place a newcomer needs."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.test import Client

pytestmark = pytest.mark.django_db


def test_it_shows_anyone_the_links_to_dashboard_docs_admin_and_health() -> None:
    response = Client().get("/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for path in ("/dashboard", "/api/docs", "/api/redoc", "/admin/", "/health"):
        assert f'href="{path}"' in page
    assert "/auth/register" in page and "/auth/token" in page
    assert "Content-Security-Policy" in response.headers


def test_it_refuses_to_be_posted_to() -> None:
    assert Client().post("/").status_code == 405


def test_it_serves_redoc_and_swagger_from_this_site_not_a_cdn() -> None:
    for path in ("/api/docs/", "/api/redoc/"):
        page = Client().get(path).content.decode()
        assert "/static/drf_spectacular_sidecar/" in page
        assert "cdn.jsdelivr.net" not in page and "unpkg.com" not in page


def test_it_keeps_redoc_from_loading_anything_from_outside() -> None:
    policy = Client().get("/api/redoc/")["Content-Security-Policy"]

    assert "img-src 'self' data:" in policy
    assert "default-src 'self'" in policy


def test_it_collects_the_docs_bundles_for_the_production_static_storage(settings, tmp_path) -> None:
    # Without DEBUG, run_system collects static files and whitenoise serves them from the manifest.
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
    }

    call_command("collectstatic", interactive=False, verbosity=0)

    manifest = json.loads((tmp_path / "staticfiles.json").read_text())["paths"]
    for bundle in (
        "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js",
        "drf_spectacular_sidecar/redoc/bundles/redoc.standalone.js",
        "aicp/landing.css",
    ):
        assert (tmp_path / manifest[bundle]).is_file()
