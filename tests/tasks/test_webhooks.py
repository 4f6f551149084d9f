"""Signed webhooks (issue 21 item 2): a real receiver on 127.0.0.1 verifies signatures and scripts answers.

The django-q2 queue runs in sync mode here (tests/settings.py), so the delivery job enqueued when the
completing transaction commits runs right after it; retries are one-off schedules, run here by calling the
job once the delivery is due.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import Schedule

from tasks import jobs
from tasks.models import Task, WebhookDelivery
from tasks.services.lifecycle import Outcome, task_complete, task_fail
from tasks.services.submission import TaskRequest, task_submit
from tasks.services.webhooks import retry_delay_s
from tasks.webhooks import queue as webhook_queue
from tasks.webhooks.addresses import RefusedCallback, check_callback_url
from tasks.webhooks.signing import HEADER, verify

pytestmark = pytest.mark.django_db

HANG = -1  # a scripted answer: accept the request and never answer it (until the test ends)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1 answering each POST with the next scripted status."""

    script: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    got_one: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def next_status(self) -> int:
        return self.script.pop(0) if self.script else 200


@pytest.fixture
def receiver(settings) -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 — http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.received.append(Received(self.path, dict(self.headers.items()), body))
            state.got_one.set()
            status = state.next_status()
            if status == HANG:
                state.release.wait(30)
                return
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/aicp?source=test"
    settings.AICP_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    settings.AICP_WEBHOOK_TIMEOUT_S = 0.3
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


def _submit(buyer, callback_url: str) -> Task:
    return task_submit(
        buyer=buyer,
        request=TaskRequest(description="Summarise this.", complexity=1, callback_url=callback_url),
    )


def _complete(task: Task, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert task_complete(task_id=task.id, outcome=Outcome(result="a summary", latency_ms=12))


def _make_due(delivery: WebhookDelivery) -> None:
    """What the passing of the backoff would do (no test waits for it)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def test_it_posts_a_signed_task_completed_event_with_the_task_as_get_shows_it(
    buyer, buyer_client, receiver, django_capture_on_commit_callbacks
):
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)

    assert len(receiver.received) == 1
    request = receiver.received[0]
    assert request.path == "/hooks/aicp?source=test"
    secret = buyer_client.get("/auth/me").json()["webhook_secret"]
    assert verify(secret=secret, header=request.headers[HEADER], body=request.body, now=int(time.time()))
    assert not verify(
        secret=secret + "x", header=request.headers[HEADER], body=request.body, now=int(time.time())
    )
    assert not verify(
        secret=secret, header=request.headers[HEADER], body=request.body + b" ", now=int(time.time())
    )
    payload = json.loads(request.body)
    assert payload["event"] == "task.completed"
    assert payload["task"] == buyer_client.get(f"/tasks/{task.id}").json()
    assert payload["task"]["result"] == "a summary"
    delivery = WebhookDelivery.objects.get(task=task)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 1)


def test_it_signs_as_documented(buyer, receiver, django_capture_on_commit_callbacks):
    import hashlib
    import hmac

    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    request = receiver.received[0]
    fields = dict(part.split("=", 1) for part in request.headers[HEADER].split(","))
    buyer.refresh_from_db()
    expected = hmac.new(
        buyer.webhook_secret.encode(), fields["t"].encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert fields["v1"] == expected
    assert abs(int(fields["t"]) - time.time()) < 600


def test_it_posts_task_failed_when_the_task_fails(buyer, receiver, django_capture_on_commit_callbacks):
    task = _submit(buyer, receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        assert task_fail(task_id=task.id, error="the provider refused", error_code="permanent")
    payload = json.loads(receiver.received[0].body)
    assert payload["event"] == "task.failed"
    assert payload["task"]["status"] == "failed"
    assert payload["task"]["error_code"] == "permanent"


def test_it_sends_nothing_for_a_task_without_callback_url(
    buyer, receiver, django_capture_on_commit_callbacks
):
    task = _submit(buyer, "")
    _complete(task, django_capture_on_commit_callbacks)
    assert receiver.received == []
    assert not WebhookDelivery.objects.exists()


def test_it_retries_a_receiver_that_answered_500_and_delivers_when_it_answers_200(
    buyer, buyer_client, receiver, django_capture_on_commit_callbacks
):
    receiver.script = [500, 200]
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)

    delivery = WebhookDelivery.objects.get(task=task)
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.PENDING, 1)
    assert delivery.next_attempt_at > timezone.now()
    retry = Schedule.objects.get(func="tasks.jobs.webhook_attempt")
    assert retry.next_run == delivery.next_attempt_at
    jobs.webhook_attempt(str(delivery.pk))  # not due yet: the schedule would not have run it
    assert len(receiver.received) == 1

    _make_due(delivery)
    with django_capture_on_commit_callbacks(execute=True):
        jobs.webhook_attempt(str(delivery.pk))

    assert len(receiver.received) == 2
    assert receiver.received[0].body == receiver.received[1].body  # the same event, re-sent
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 2)
    body = buyer_client.get(f"/tasks/{task.id}/deliveries").json()
    assert [d["status"] for d in body] == ["delivered"]
    assert [(a["number"], a["status_code"]) for a in body[0]["attempt_log"]] == [(1, 500), (2, 200)]
    assert body[0]["attempt_log"][0]["error"] == "HTTP 500"
    assert all(a["duration_ms"] >= 0 for a in body[0]["attempt_log"])


def test_it_times_out_a_receiver_that_never_answers(
    buyer, buyer_client, receiver, django_capture_on_commit_callbacks
):
    receiver.script = [HANG]
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)

    (attempt,) = buyer_client.get(f"/tasks/{task.id}/deliveries").json()[0]["attempt_log"]
    assert attempt["status_code"] is None
    assert attempt["error"] == "timed out after 0.3 s"
    assert WebhookDelivery.objects.get(task=task).status == WebhookDelivery.Status.PENDING


def test_it_gives_up_when_the_next_retry_would_fall_outside_the_window(
    buyer, settings, receiver, django_capture_on_commit_callbacks
):
    settings.AICP_WEBHOOK_RETRY_WINDOW_S = 0
    receiver.script = [503]
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(task=task)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        WebhookDelivery.Status.GAVE_UP,
        1,
        None,
    )
    assert not Schedule.objects.filter(func="tasks.jobs.webhook_attempt").exists()
    jobs.webhook_attempt(str(delivery.pk))
    assert len(receiver.received) == 1


def test_it_backs_off_exponentially_with_jitter_up_to_the_cap(settings):
    settings.AICP_WEBHOOK_BACKOFF_S = 10.0
    settings.AICP_WEBHOOK_BACKOFF_MAX_S = 3600.0
    assert [retry_delay_s(attempt=n, jitter=lambda: 1.0) for n in (1, 2, 3, 4)] == [10.0, 20.0, 40.0, 80.0]
    assert retry_delay_s(attempt=3, jitter=lambda: 0.0) == 20.0  # half the ceiling at least
    assert retry_delay_s(attempt=30, jitter=lambda: 1.0) == 3600.0


def test_it_never_calls_the_receiver_in_the_completing_transaction(
    buyer, receiver, monkeypatch, django_capture_on_commit_callbacks
):
    """A dead receiver never slows execution: completing only enqueues a job, after its commit."""
    monkeypatch.setattr(Conf, "SYNC", False)
    enqueued = []
    real_async_task = webhook_queue.async_task
    monkeypatch.setattr(
        webhook_queue,
        "async_task",
        lambda *args, **kwargs: enqueued.append(args) or real_async_task(*args, **kwargs),
    )
    receiver.script = [HANG]
    task = _submit(buyer, receiver.url)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert task_complete(task_id=task.id, outcome=Outcome(result="done"))
    assert enqueued == []  # nothing before the commit
    for callback in callbacks:
        callback()
    assert enqueued == [("tasks.jobs.webhook_event", str(task.id), "task.completed")]
    assert receiver.received == []
    assert not WebhookDelivery.objects.exists()


def test_it_lets_an_operator_resend_a_delivery_from_the_admin(
    buyer, operator, receiver, client, settings, django_capture_on_commit_callbacks
):
    settings.AICP_WEBHOOK_RETRY_WINDOW_S = 0  # the first failure gives up
    receiver.script = [500]
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    delivery = WebhookDelivery.objects.get(task=task)
    assert delivery.status == WebhookDelivery.Status.GAVE_UP

    client.force_login(operator)
    changelist = client.get("/admin/tasks/webhookdelivery/")
    assert changelist.status_code == 200
    assert b"resend" in changelist.content
    page = client.get(f"/admin/tasks/webhookdelivery/{delivery.pk}/change/")
    assert page.status_code == 200 and b"HTTP 500" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/tasks/webhookdelivery/", {"action": "resend", "_selected_action": [str(delivery.pk)]}
        )
    assert response.status_code == 302
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (WebhookDelivery.Status.DELIVERED, 2)
    assert len(receiver.received) == 2


def test_it_shows_deliveries_to_the_tasks_buyer_only(
    buyer, other_client, buyer_client, receiver, django_capture_on_commit_callbacks
):
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    assert other_client.get(f"/tasks/{task.id}/deliveries").status_code == 404
    assert len(buyer_client.get(f"/tasks/{task.id}/deliveries").json()) == 1


def test_it_rotates_the_webhook_secret_and_signs_with_the_new_one(
    buyer, buyer_client, receiver, django_capture_on_commit_callbacks
):
    old = buyer_client.get("/auth/me").json()["webhook_secret"]
    assert old.startswith("whsec_") and len(old) > 40
    response = buyer_client.post("/auth/webhook-secret")
    assert response.status_code == 200
    new = response.json()["webhook_secret"]
    assert new != old
    assert buyer_client.get("/auth/me").json()["webhook_secret"] == new

    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    request = receiver.received[0]
    now = int(time.time())
    assert verify(secret=new, header=request.headers[HEADER], body=request.body, now=now)
    assert not verify(secret=old, header=request.headers[HEADER], body=request.body, now=now)


def test_it_gives_each_buyer_their_own_secret(buyer, other_buyer):
    assert buyer.webhook_secret != other_buyer.webhook_secret


# --- submission: which callback URLs are accepted (no SSRF) ---------------------------------------------


def _post(client, callback_url: str):
    return client.post(
        "/tasks", {"description": "x", "complexity": 1, "callback_url": callback_url}, format="json"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",  # loopback, not listed
        "https://127.0.0.1/hook",
        "https://10.1.2.3/hook",  # private
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",  # loopback behind an IPv4-mapped IPv6 address
        "https://0.0.0.0/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "http://93.184.216.34/hook",  # public, but plain http to an unlisted host
        "ftp://93.184.216.34/hook",
        "https://user:pass@93.184.216.34/hook",
        "not a url",
    ],
)
def test_it_refuses_a_callback_url_that_could_reach_inside(buyer_client, url):
    response = _post(buyer_client, url)
    assert response.status_code == 400
    assert "callback_url" in response.json()["error"]["fields"]
    assert not Task.objects.exists()


def test_it_accepts_https_to_a_public_address(buyer_client):
    response = _post(buyer_client, "https://93.184.216.34/hook")
    assert response.status_code == 201
    assert response.json()["callback_url"] == "https://93.184.216.34/hook"


def test_it_accepts_a_listed_loopback_host_over_http(buyer_client, settings):
    settings.AICP_WEBHOOK_ALLOW_HOSTS = ["127.0.0.1"]
    assert _post(buyer_client, "http://127.0.0.1:8000/hook").status_code == 201


def test_it_refuses_a_name_if_any_of_its_addresses_is_private():
    def resolver(host: str, port: int) -> list[str]:
        return {"hooks.example.com": ["93.184.216.34", "10.0.0.7"]}[host]

    with pytest.raises(RefusedCallback, match="10.0.0.7"):
        check_callback_url("https://hooks.example.com/x", allowed=[], resolver=resolver)
    target = check_callback_url("https://hooks.example.com/x", allowed=["10.0.0.0/8"], resolver=resolver)
    assert (target.host, target.address, target.port, target.path) == (
        "hooks.example.com",
        "93.184.216.34",
        443,
        "/x",
    )


def test_it_refuses_at_delivery_a_url_that_became_private(
    buyer, settings, receiver, django_capture_on_commit_callbacks
):
    task = _submit(buyer, receiver.url)
    settings.AICP_WEBHOOK_ALLOW_HOSTS = []  # the operator removed the host since the task was accepted
    _complete(task, django_capture_on_commit_callbacks)
    assert receiver.received == []
    attempt = WebhookDelivery.objects.get(task=task).attempt_log.get()
    assert attempt.status_code is None and attempt.error.startswith("refused:")


def test_it_keeps_the_idempotency_fingerprint_of_a_request_without_the_new_fields():
    import hashlib

    from tasks.services.idempotency import request_fingerprint

    before = '{"agent":"auto","complexity":1,"description":"x","labels":null,"task_type":""}'
    assert (
        request_fingerprint(TaskRequest(description="x", complexity=1))
        == hashlib.sha256(before.encode()).hexdigest()
    )
    assert request_fingerprint(
        TaskRequest(description="x", complexity=1, callback_url="https://93.184.216.34/")
    ) != (request_fingerprint(TaskRequest(description="x", complexity=1)))
    assert request_fingerprint(TaskRequest(description="x", complexity=1, priority="batch")) != (
        request_fingerprint(TaskRequest(description="x", complexity=1))
    )


def test_it_notifies_a_task_run_by_the_drainer_against_the_llm(
    buyer_client, buyer, receiver, llm_settings, django_capture_on_commit_callbacks
):
    from tasks.execution.drainer import Drainer

    llm_settings.set_answer("Is this about sport? The match ended 2-1.", "sport")
    body = {
        "description": "Is this about sport? The match ended 2-1.",
        "complexity": 1,
        "labels": ["sport", "politics"],
        "agent": "openai-gpt-4o-mini",
        "callback_url": receiver.url,
    }
    task_id = buyer_client.post("/tasks", body, format="json").json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert Drainer().run().completed == 1
    (request,) = receiver.received
    payload = json.loads(request.body)
    assert (payload["event"], payload["task"]["id"], payload["task"]["result"]) == (
        "task.completed",
        task_id,
        "sport",
    )
    buyer.refresh_from_db()
    assert verify(
        secret=buyer.webhook_secret, header=request.headers[HEADER], body=request.body, now=int(time.time())
    )


# --- nothing lost: the reaper's webhook sweep ------------------------------------------------------------


def _finished_ago(task: Task, seconds: float) -> None:
    Task.objects.filter(pk=task.pk).update(finished_at=timezone.now() - timedelta(seconds=seconds))


def test_the_sweep_sends_an_event_whose_job_was_lost_once_it_is_overdue(
    buyer, receiver, django_capture_on_commit_callbacks
):
    lost, recent = _submit(buyer, receiver.url), _submit(buyer, receiver.url)
    for task in (lost, recent):
        with django_capture_on_commit_callbacks(execute=False):  # the enqueue never happens
            assert task_complete(task_id=task.id, outcome=Outcome(result="a summary", latency_ms=12))
    _finished_ago(lost, 180)
    _finished_ago(recent, 30)  # its job may still be on its way: not the sweep's yet

    jobs.reap_expired_leases()

    assert [json.loads(r.body)["task"]["id"] for r in receiver.received] == [str(lost.id)]
    assert WebhookDelivery.objects.get(task=lost).status == WebhookDelivery.Status.DELIVERED
    jobs.reap_expired_leases()
    assert len(receiver.received) == 1  # delivered once: the next sweep leaves it alone


def test_the_sweep_resumes_a_pending_delivery_whose_retry_was_never_scheduled(
    buyer, receiver, django_capture_on_commit_callbacks
):
    receiver.script = [500, 200]
    task = _submit(buyer, receiver.url)
    _complete(task, django_capture_on_commit_callbacks)
    Schedule.objects.filter(func="tasks.jobs.webhook_attempt").delete()  # the retry's schedule is lost
    delivery = WebhookDelivery.objects.get(task=task)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=3)
    )

    jobs.reap_expired_leases()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == (
        WebhookDelivery.Status.DELIVERED,
        2,
        2,
    )


def test_a_broker_failure_at_commit_is_one_log_line_and_the_sweep_delivers_later(
    buyer, receiver, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    task = _submit(buyer, receiver.url)

    def broker_down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    with monkeypatch.context() as patched:
        patched.setattr(webhook_queue, "async_task", broker_down)
        with caplog.at_level("WARNING", logger="aicp.queue"):
            _complete(task, django_capture_on_commit_callbacks)

    assert Task.objects.get(pk=task.pk).status == Task.Status.COMPLETED
    failures = [r for r in caplog.records if "Could not enqueue webhook" in r.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None
    assert not WebhookDelivery.objects.filter(task=task).exists() and receiver.received == []

    _finished_ago(task, 180)
    jobs.reap_expired_leases()
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["event"] == "task.completed"
