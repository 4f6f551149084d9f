import pytest

pytestmark = pytest.mark.django_db


def test_it_reports_health_of_database_queue_and_llm(api_client, settings):
    settings.AICP_LLM_SIMULATED = True
    response = api_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] and body["database"]["engine"] in {"sqlite", "postgresql"}
    assert body["queue"]["ok"] and "backlog" in body["queue"]
    assert body["llm"]["simulated"] is True


def test_it_says_when_the_real_llm_is_used(api_client, settings):
    settings.AICP_LLM_SIMULATED = False
    settings.OPENAI_API_KEY = "sk-test"
    body = api_client.get("/health/").json()
    assert body["llm"] == {"simulated": False, "base_url": body["llm"]["base_url"], "api_key_set": True}
    assert "sk-test" not in str(body)


def test_it_serves_the_openapi_schema_and_docs(api_client):
    schema = api_client.get("/api/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    for path in ["/tasks", "/auth/register", "/auth/token", "/agents", "/auth/me"]:
        assert path in text
    assert api_client.get("/api/docs/").status_code == 200


def test_it_answers_unknown_api_paths_with_404(api_client):
    assert api_client.get("/nope").status_code == 404
