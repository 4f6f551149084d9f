import pytest

from tests.factories import authenticated_client

pytestmark = pytest.mark.django_db

DETAILS = {"status", "database", "queue", "llm", "elapsed_ms"}


def test_it_tells_anyone_only_whether_the_service_is_up(api_client, settings):
    settings.AICP_LLM_SIMULATED = False
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = "https://llm.internal.example/v1"
    response = api_client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "up"}
    assert response["Cache-Control"] == "no-store"


def test_it_shows_a_buyer_or_a_bad_token_no_details(buyer_client, settings):
    settings.AICP_LLM_SIMULATED = True
    assert buyer_client.get("/health").json() == {"status": "up"}
    buyer_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    response = buyer_client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "up"})


def test_it_reports_database_queue_and_simulator_to_an_operator(operator_client, settings):
    settings.AICP_LLM_SIMULATED = True
    settings.OPENAI_API_KEY = "simulator"  # what run_system hands the simulator
    settings.OPENAI_BASE_URL = "http://127.0.0.1:8100/v1"
    response = operator_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == DETAILS and body["status"] == "up"
    assert body["database"]["ok"] and body["database"]["engine"] in {"sqlite", "postgresql"}
    assert body["queue"]["ok"] and "backlog" in body["queue"]
    assert body["llm"] == {"backend": "simulator", "base_url": "http://127.0.0.1:8100/v1"}


def test_it_says_when_the_real_llm_is_used(operator_client, settings):
    settings.AICP_LLM_SIMULATED = False
    settings.OPENAI_API_KEY = "sk-test"
    settings.OPENAI_BASE_URL = None
    body = operator_client.get("/health/").json()
    assert body["llm"] == {"backend": "openai", "base_url": "https://api.openai.com/v1", "api_key_set": True}
    assert "sk-test" not in str(body)


def test_it_shows_the_details_to_an_operator_signed_in_to_the_admin(admin_client):
    assert set(admin_client.get("/health").json()) == DETAILS


def test_it_answers_down_with_503_when_a_dependency_fails(api_client, operator, monkeypatch):
    monkeypatch.setattr(
        "aicp.views.check_queue", lambda: {"ok": False, "error": "broker at 10.0.0.5 refused"}
    )
    response = api_client.get("/health")
    assert (response.status_code, response.json()) == (503, {"status": "down"})
    details = authenticated_client(operator).get("/health")
    assert details.status_code == 503 and details.json()["queue"]["error"] == "broker at 10.0.0.5 refused"


def test_it_serves_the_openapi_schema_and_docs(api_client):
    schema = api_client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ["/tasks", "/auth/register", "/auth/token", "/agents", "/auth/me"]:
        assert path in text
    assert api_client.get("/api/docs/").status_code == 200


def test_it_answers_unknown_api_paths_with_404(api_client):
    assert api_client.get("/nope").status_code == 404
