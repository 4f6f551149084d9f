"""The OpenAI-compatible simulator: wire format, answer rules, faults, concurrency, command line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest

from agents.llm import LLMEndpoint, complete
from agents.simulator import Answer, Delay, Drop, Fault, LLMSimulator, add_arguments, simulator_from_options

LABELS = ["sports", "politics", "cooking"]
ROOT = Path(__file__).resolve().parents[2]


def _label_request(text: str, labels: list[str] = LABELS) -> dict:
    schema = {"type": "object", "properties": {"label": {"type": "string", "enum": labels}}}
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "classify"}, {"role": "user", "content": text}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "label", "schema": schema}},
    }


def _post(sim: LLMSimulator, body: dict | bytes, path: str = "/chat/completions") -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        sim.base_url + path, data=data, headers={"Content-Type": "application/json"}
    )
    return _send(request)


def _get(sim: LLMSimulator, path: str) -> tuple[int, dict, dict]:
    return _send(urllib.request.Request(sim.base_url.removesuffix("/v1") + path))


def _send(request: urllib.request.Request) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), json.loads(err.read())


def _label_of(sim: LLMSimulator, text: str, labels: list[str] = LABELS) -> str:
    status, _, body = _post(sim, _label_request(text, labels))
    assert status == 200, body
    return json.loads(body["choices"][0]["message"]["content"])["label"]


def _write_dataset(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


def test_it_answers_in_the_openai_shape_and_says_it_is_a_simulator(llm_simulator):
    status, headers, body = _post(
        llm_simulator, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two three"}]}
    )

    assert status == 200
    assert headers["X-AICP-Simulator"] == "1"
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "gpt-4o-mini" and isinstance(body["created"], int)
    assert body["system_fingerprint"] == "aicp-simulator"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    assert "aicp-simulator" in choice["message"]["content"]
    usage = body["usage"]
    assert usage["prompt_tokens"] == 3
    assert usage["completion_tokens"] == len(choice["message"]["content"].split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_it_answers_the_real_openai_client(llm_simulator):
    client = openai.OpenAI(base_url=llm_simulator.base_url, api_key="k", max_retries=0)

    response = client.chat.completions.create(**_label_request("what a match"))

    assert json.loads(response.choices[0].message.content)["label"] in LABELS
    assert response.usage.prompt_tokens == 4


def test_it_lists_models_and_says_it_is_a_simulator(llm_simulator):
    client = openai.OpenAI(base_url=llm_simulator.base_url, api_key="k", max_retries=0)

    models = client.models.list().data

    assert "gpt-4o-mini" in {m.id for m in models}
    assert all(m.owned_by == "aicp-simulator" for m in models)
    assert client.models.retrieve("anything").owned_by == "aicp-simulator"


def test_it_reports_health(llm_simulator):
    status, headers, body = _get(llm_simulator, "/health")

    assert status == 200 and body["status"] == "ok" and body["simulator"] is True
    assert headers["X-AICP-Simulator"] == "1"


def test_it_rejects_malformed_requests_with_openai_errors(llm_simulator):
    bad_json = _post(llm_simulator, b"{not json")
    no_messages = _post(llm_simulator, {"model": "gpt-4o-mini", "messages": []})
    streaming = _post(
        llm_simulator, {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    )
    unknown = _get(llm_simulator, "/v1/nothing")

    for status, _, body in (bad_json, no_messages, streaming):
        assert status == 400
        assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert unknown[0] == 404 and set(unknown[2]["error"]) == {"message", "type", "param", "code"}
    assert llm_simulator.request_count == 3
    assert llm_simulator.requests[0] == "{not json"


def test_it_follows_the_script_then_resumes_normal_answers(llm_simulator):
    llm_simulator.script(Answer("scripted"), Fault(503, code="overloaded", message="busy"))

    first = _post(llm_simulator, _label_request("a"))
    second = _post(llm_simulator, _label_request("a"))
    third = _post(llm_simulator, _label_request("a"))

    assert first[2]["choices"][0]["message"]["content"] == "scripted"
    assert second[0] == 503
    assert second[2]["error"] == {
        "message": "busy",
        "type": "server_error",
        "param": None,
        "code": "overloaded",
    }
    assert third[0] == 200 and _label_of(llm_simulator, "a") in LABELS
    assert llm_simulator.request_count == 4


def test_it_sends_retry_after_on_scripted_rate_limits(llm_simulator):
    llm_simulator.script(Fault(429, retry_after=1.5), Fault(429, code="insufficient_quota"))

    status, headers, _ = _post(llm_simulator, _label_request("a"))
    quota_status, quota_headers, quota = _post(llm_simulator, _label_request("a"))

    assert status == 429 and headers["Retry-After"] == "2" and headers["retry-after-ms"] == "1500"
    assert quota_status == 429 and "Retry-After" not in quota_headers
    assert quota["error"]["type"] == quota["error"]["code"] == "insufficient_quota"


def test_it_drops_the_connection_without_an_answer(llm_simulator):
    llm_simulator.script(Drop())
    client = openai.OpenAI(base_url=llm_simulator.base_url, api_key="k", max_retries=0)

    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(**_label_request("a"))
    # The same client recovers on a fresh connection.
    assert client.chat.completions.create(**_label_request("a")).choices[0].message.content


def test_it_delays_a_scripted_answer(llm_simulator):
    llm_simulator.script(Delay(0.2))

    started = time.monotonic()
    status, _, _ = _post(llm_simulator, _label_request("a"))

    assert status == 200 and time.monotonic() - started >= 0.2


def test_it_answers_known_texts_with_the_dataset_label(make_llm_simulator, tmp_path):
    dataset = _write_dataset(tmp_path / "d.jsonl", [("The  match went to\nextra time", "sports")] * 1)
    sim = make_llm_simulator(dataset=dataset)
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=sim.base_url, api_key="k")

    result = complete(endpoint=endpoint, text=" The match went to extra time ", labels=LABELS)

    assert result.text == "sports"


def test_it_ignores_a_dataset_label_outside_the_requested_labels(make_llm_simulator, tmp_path):
    sim = make_llm_simulator(dataset=_write_dataset(tmp_path / "d.jsonl", [("boil the pasta", "cooking")]))

    assert _label_of(sim, "boil the pasta") == "cooking"
    assert _label_of(sim, "boil the pasta", ["yes", "no"]) in {"yes", "no"}


def test_it_rejects_a_malformed_dataset(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')

    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        LLMSimulator(dataset=path)


def test_it_flips_dataset_labels_with_noise_deterministically(make_llm_simulator, tmp_path):
    rows = [(f"sample text {i}", LABELS[i % 3]) for i in range(300)]
    dataset = _write_dataset(tmp_path / "d.jsonl", rows)
    noisy = make_llm_simulator(dataset=dataset, noise=0.3, seed=1)
    same_seed = make_llm_simulator(dataset=dataset, noise=0.3, seed=1)
    other_seed = make_llm_simulator(dataset=dataset, noise=0.3, seed=2)

    answers = [_label_of(noisy, text) for text, _ in rows]
    flipped = sum(answer != label for answer, (_, label) in zip(answers, rows, strict=True))

    assert 0.2 < flipped / len(rows) < 0.4
    assert all(answer in LABELS for answer in answers)
    assert [_label_of(same_seed, text) for text, _ in rows[:50]] == answers[:50]
    assert [_label_of(other_seed, text) for text, _ in rows[:50]] != answers[:50]


def test_it_picks_unknown_labels_by_a_stable_hash(make_llm_simulator):
    first, second = make_llm_simulator(seed=7), make_llm_simulator(seed=7)
    texts = [f"unknown text {i}" for i in range(60)]

    answers = [_label_of(first, t) for t in texts]

    assert answers == [_label_of(second, t) for t in texts]
    assert set(answers) == set(LABELS)  # spread over the labels, not stuck on one


def test_it_forces_an_answer_for_a_text(llm_simulator):
    llm_simulator.set_answer("pick  me", "politics")
    llm_simulator.set_answer("free", "forced free-form text")

    status, _, body = _post(llm_simulator, {"model": "m", "messages": [{"role": "user", "content": "free"}]})

    assert _label_of(llm_simulator, "pick me") == "politics"
    assert body["choices"][0]["message"]["content"] == "forced free-form text"


def test_it_injects_faults_at_the_configured_rate(make_llm_simulator):
    sim = make_llm_simulator(fault_rate=0.5, seed=3)

    responses = [_post(sim, _label_request(f"t{i}")) for i in range(200)]

    faults = [(status, headers) for status, headers, _ in responses if status != 200]
    assert 70 < len(faults) < 130
    assert {status for status, _ in faults} == {429, 500, 503}
    assert all("Retry-After" in headers for status, headers in faults if status == 429)


def test_it_survives_faults_through_the_client_retries(make_llm_simulator):
    sim = make_llm_simulator(fault_rate=0.3, seed=5)
    endpoint = LLMEndpoint(model="gpt-4o-mini", base_url=sim.base_url, api_key="k")

    results = [
        complete(endpoint=endpoint, text=f"t{i}", labels=LABELS, max_attempts=8, backoff_s=0.01)
        for i in range(30)
    ]

    assert all(r.text in LABELS for r in results)
    assert sum(r.attempts for r in results) == sim.request_count > 30


def test_it_picks_the_closest_label_zero_shot(make_llm_simulator, monkeypatch):
    vocabulary = {"sports": [1.0, 0.0, 0.0], "politics": [0.0, 1.0, 0.0], "cooking": [0.0, 0.0, 1.0]}

    def encode_texts(texts: list[str]) -> np.ndarray:
        # A toy encoder: a text points at the labels whose names it mentions.
        rows = [
            np.sum([v for k, v in vocabulary.items() if k in t] or [[1.0, 1.0, 1.0]], axis=0) for t in texts
        ]
        return np.array([r / np.linalg.norm(r) for r in rows])

    fake = types.ModuleType("duke.encoder")
    fake.encoder_available = lambda: True
    fake.encode_texts = encode_texts
    monkeypatch.setitem(sys.modules, "duke.encoder", fake)
    sim = make_llm_simulator(zero_shot=True)

    assert _label_of(sim, "a text about cooking dinner") == "cooking"
    assert _label_of(sim, "elections and politics") == "politics"


def test_it_falls_back_to_the_hash_when_the_encoder_fails(make_llm_simulator, monkeypatch):
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model files missing")

    fake = types.ModuleType("duke.encoder")
    fake.encoder_available = lambda: True
    fake.encode_texts = broken
    monkeypatch.setitem(sys.modules, "duke.encoder", fake)
    zero_shot = make_llm_simulator(zero_shot=True)
    hashed = make_llm_simulator(zero_shot=False)

    assert [_label_of(zero_shot, f"x{i}") for i in range(10)] == [
        _label_of(hashed, f"x{i}") for i in range(10)
    ]


def test_it_falls_back_to_the_hash_when_no_encoder_is_installed(make_llm_simulator, monkeypatch):
    monkeypatch.setitem(sys.modules, "duke.encoder", None)  # makes the import fail
    sim = make_llm_simulator(zero_shot=True)

    assert _label_of(sim, "anything") in LABELS


def _fire_concurrently(sim: LLMSimulator, n: int) -> float:
    def one(i: int) -> int:
        return _post(sim, _label_request(f"concurrent {i}"))[0]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=n) as pool:
        statuses = list(pool.map(one, range(n)))
    assert statuses == [200] * n
    return time.monotonic() - started


def test_it_serves_concurrent_requests_in_parallel(make_llm_simulator):
    sim = make_llm_simulator(latency_ms=300)

    assert _fire_concurrently(sim, 100) < 5.0  # sequentially: 30 s; the margin is for a busy 2-core box


def test_it_serves_two_hundred_slow_requests_at_once(make_llm_simulator):
    sim = make_llm_simulator(latency_ms=500)

    assert _fire_concurrently(sim, 200) < 2.0


def test_it_bounds_the_request_log(llm_simulator):
    for i in range(1005):
        llm_simulator.set_answer(str(i), "x")  # cheap requests: no latency, forced answers
    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(lambda i: _post(llm_simulator, _label_request(str(i))), range(1005)))

    assert llm_simulator.request_count == 1005
    assert len(llm_simulator.requests) == 1000


def test_it_stops_and_refuses_bad_settings():
    with pytest.raises(ValueError):
        LLMSimulator(fault_rate=1.5)
    with LLMSimulator(zero_shot=False) as sim:
        url = sim.base_url
        assert _get(sim, "/health")[0] == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=1)


def test_it_runs_as_a_module():
    process = subprocess.Popen(
        [sys.executable, "-m", "agents.simulator", "--port", "0", "--no-zero-shot"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = process.stdout.readline()
        base_url = line.split("serving at ", 1)[1].split()[0]
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=5) as response:
            assert json.loads(response.read())["simulator"] is True
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_it_shares_its_options_with_the_management_command():
    from agents.management.commands.llm_simulator import Command

    parser = Command().create_parser("manage.py", "llm_simulator")
    options = vars(
        parser.parse_args(
            ["--port", "0", "--latency-ms", "5", "--fault-rate", "0.1", "--noise", "0.2", "--no-zero-shot"]
        )
    )
    sim = simulator_from_options(options)

    assert (sim.port, sim.latency_ms, sim.fault_rate, sim.noise, sim.zero_shot) == (0, 5, 0.1, 0.2, False)
    assert callable(add_arguments)
