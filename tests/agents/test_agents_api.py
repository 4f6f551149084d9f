import pytest

pytestmark = pytest.mark.django_db


def test_it_lists_the_seeded_default_agents(buyer_client):
    agents = {agent["name"]: agent for agent in buyer_client.get("/agents").json()}
    assert set(agents) >= {"openai-gpt-4o-mini", "openai-gpt-4o", "duke"}
    assert agents["openai-gpt-4o-mini"]["model"] == "gpt-4o-mini"
    assert agents["duke"]["backend"] == "duke"
    assert float(agents["openai-gpt-4o"]["price_per_unit"]) > float(
        agents["openai-gpt-4o-mini"]["price_per_unit"]
    )
    assert agents["openai-gpt-4o-mini"]["reputation"] == "1.0000"
    assert agents["openai-gpt-4o-mini"]["success_rate"] is None


def test_it_shows_an_agent_with_earnings(buyer_client):
    response = buyer_client.get("/agents/openai-gpt-4o-mini/")
    assert response.status_code == 200
    assert response.json()["earnings"] == "0.0000"


def test_it_answers_404_for_an_unknown_agent(buyer_client):
    response = buyer_client.get("/agents/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_found"


def test_it_requires_authentication(api_client):
    assert api_client.get("/agents").status_code == 401
