"""An attack campaign against the running system: the real stack on loopback, attacked over HTTP.

Starts ``manage.py run_system`` (gunicorn + qcluster + LLM simulator) in the default development mode
(DEBUG on, as ``make run``) on its own data folder, then sends, per category, requests that try to break
it, and prints one row per category: requests sent, what was expected, what came back, and whether it
held. The defects of issue 20 are re-tried one by one; the ledger is checked in SQL at the end.

    .venv/bin/python bench/attack_run.py                       # SQLite, ORM broker
    .venv/bin/python bench/attack_run.py --postgres postgresql://aicp:aicp@127.0.0.1:5432/aicp_attack \
        --redis redis://127.0.0.1:6379/9                       # the scale-out path
    .venv/bin/python bench/attack_run.py --fault-tests         # also kill a worker / stop Redis (pytest)

The PostgreSQL database named in --postgres is dropped and created again: give it a name of its own.
Exit status 1 when any row did not hold.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (  # noqa: E402
    MANAGE,
    PYTHON,
    REPO,
    apply_env,
    command_line,
    free_port,
    load_average,
    stack_env,
)
from bench._live_stack import run_system_start, run_system_stop  # noqa: E402

OPERATOR = ("attack-operator", "attack-operator-pass-5531")
PASSWORD = "Q7#vZ!9pW%mK2&xR"  # unlike any generated username (the similarity check)
REGISTER_LIMIT = 20  # AICP_THROTTLE_REGISTER's default, 20/hour


# --- HTTP -----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {"items": value}

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


class Client:
    """One new connection per request (thread-safe, nothing shared); counts every request it sends."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self._lock = threading.Lock()

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        token: str = "",
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        all_headers = {"Accept": "application/json"}
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        all_headers.update(headers or {})
        with self._lock:
            self.sent += 1
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            connection.request(method, path, body=payload, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            connection.close()


def concurrently(calls: list[Callable[[], Answer]]) -> list[Answer]:
    """Runs the calls at once (each in its thread, released together by a barrier)."""
    barrier = threading.Barrier(len(calls))
    answers: list[Answer | None] = [None] * len(calls)

    def run(index: int) -> None:
        barrier.wait()
        answers[index] = calls[index]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [answer for answer in answers if answer is not None]


def statuses(answers: Iterable[Answer]) -> str:
    counts = Counter(answer.status for answer in answers)
    return ", ".join(f"{count}×{status}" for status, count in sorted(counts.items()))


# --- the table ------------------------------------------------------------------------------------------


@dataclass
class Row:
    category: str
    sent: int
    expected: str
    got: str
    held: bool
    notes: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.rows: list[Row] = []

    @contextlib.contextmanager
    def category(self, name: str, expected: str) -> Iterable[Row]:
        before = self.client.sent
        row = Row(name, 0, expected, "", False)
        started = time.monotonic()
        try:
            yield row
        except Exception as exc:  # a category that crashed did not hold; the others still run
            row.held = False
            row.got = (row.got + f"; crashed: {type(exc).__name__}: {exc}").strip("; ")[:300]
        row.sent += self.client.sent - before
        self.rows.append(row)
        mark = "held" if row.held else "DID NOT HOLD"
        print(
            f"  {name}: {row.sent} requests, {time.monotonic() - started:.0f} s, {mark}: {row.got}",
            flush=True,
        )
        for note in row.notes:
            print(f"      {note}", flush=True)

    def table(self) -> str:
        lines = [
            "| category | requests | expected | got | held |",
            "|---|---:|---|---|---|",
        ]
        for row in self.rows:
            held = "yes" if row.held else "NO"
            lines.append(f"| {row.category} | {row.sent} | {row.expected} | {row.got} | {held} |")
        lines.append(f"| **total** | **{sum(r.sent for r in self.rows)}** | | | |")
        return "\n".join(lines)


# --- the stack ------------------------------------------------------------------------------------------


def recreate_postgres_database(url: str) -> None:
    import psycopg

    parts = urllib.parse.urlsplit(url)
    name = parts.path.lstrip("/")
    if not re.fullmatch(r"aicp_[a-z0-9_]+", name):
        raise SystemExit(f"--postgres: give a database of its own named aicp_<something>, not {name!r}")
    admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')


def flush_redis_database(url: str) -> None:
    """Empties the run's own Redis database (queue and cache); never database 0, the shared default."""
    import redis

    database = int(urllib.parse.urlsplit(url).path.lstrip("/") or 0)
    if database == 0:
        raise SystemExit("--redis: give a database number of its own (1-15), e.g. redis://127.0.0.1:6379/9")
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


class Stack:
    def __init__(self, data: Path, args: argparse.Namespace) -> None:
        self.port = free_port()
        self.log = data / "run_system.log"
        overrides = {
            "DJANGO_DEBUG": "0" if args.production else "1",  # 1: `make run`'s default mode
            "DJANGO_SUPERUSER_USERNAME": OPERATOR[0],
            "DJANGO_SUPERUSER_PASSWORD": OPERATOR[1],
            "DJANGO_SUPERUSER_EMAIL": "operator@example.invalid",
            "AICP_LOG_LEVEL": "WARNING",
        }
        if args.postgres:
            overrides["DATABASE_URL"] = args.postgres
        if args.redis:
            overrides["AICP_REDIS_URL"] = args.redis
        self.env = stack_env(data, **overrides)
        self.command = [
            PYTHON,
            MANAGE,
            "run_system",
            "--port",
            str(self.port),
            "--simulator-port",
            str(free_port()),
            "--simulator-latency-ms",
            str(args.latency_ms),
        ]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Stack:
        self.process = run_system_start(
            self.command, self.env, self.log, port=self.port, timeout_s=300, accept=(200,)
        )
        return self

    def __exit__(self, *exc: object) -> None:
        run_system_stop(self.process)


# --- the categories -------------------------------------------------------------------------------------


def reset_throttles() -> None:
    from users.models import ThrottleCounter

    ThrottleCounter.objects.all().delete()


def new_buyer(name: str, credit: Decimal | None = None) -> Any:
    from ledger.services import buyer_credit
    from users.services import buyer_register

    user = buyer_register(username=name, password=PASSWORD)
    if credit:
        buyer_credit(user_id=user.pk, amount=credit, memo="attack run")
    return user


def access_token(user: Any) -> str:
    from rest_framework_simplejwt.tokens import RefreshToken

    return str(RefreshToken.for_user(user).access_token)


def task_body(text: str, **extra: object) -> dict:
    return {"description": text, "complexity": 1, "labels": ["yes", "no"], **extra}


def signups_spoofed(c: Campaign, run: str) -> None:
    from users.models import User

    reset_throttles()
    with c.category(
        "sign-up throttle, 25 spoofed X-Forwarded-For", f"{REGISTER_LIMIT}×201 then 429 (header not trusted)"
    ) as row:
        answers = [
            c.client.call(
                "POST",
                "/auth/register",
                {"username": f"{run}-spoof-{i}", "password": PASSWORD},
                headers={"X-Forwarded-For": f"203.0.113.{i + 1}", "X-Real-IP": f"198.51.100.{i + 1}"},
            )
            for i in range(25)
        ]
        created = User.objects.filter(username__startswith=f"{run}-spoof-").count()
        row.got = f"{statuses(answers)}; {created} accounts with credit"
        row.held = created == REGISTER_LIMIT and sum(a.status == 429 for a in answers) == 25 - REGISTER_LIMIT


def signups_concurrent(c: Campaign, run: str) -> None:
    from users.models import User

    reset_throttles()
    with c.category(
        "sign-up throttle, 40 concurrent from one address", f"exactly {REGISTER_LIMIT}×201"
    ) as row:
        answers = concurrently(
            [
                lambda i=i: c.client.call(
                    "POST", "/auth/register", {"username": f"{run}-burst-{i}", "password": PASSWORD}
                )
                for i in range(40)
            ]
        )
        created = User.objects.filter(username__startswith=f"{run}-burst-").count()
        row.got = f"{statuses(answers)}; {created} accounts"
        row.held = created == REGISTER_LIMIT and sum(a.status == 201 for a in answers) == REGISTER_LIMIT
        row.held = row.held and all(a.status in (201, 429) for a in answers)
        row.notes += [f"{a.status}: {a.body[:200]!r}" for a in answers if a.status not in (201, 429)]


def refresh_fork(c: Campaign, run: str) -> None:
    from rest_framework_simplejwt.tokens import RefreshToken

    reset_throttles()
    user = new_buyer(f"{run}-refresh")
    with c.category("10 concurrent refreshes of one refresh token", "1×200, 9×401, old token dead") as row:
        for _ in range(3):  # three tokens, ten racers each
            refresh = str(RefreshToken.for_user(user))
            answers = concurrently(
                [
                    lambda body={"refresh": refresh}: c.client.call("POST", "/auth/token/refresh", body)
                    for _ in range(10)
                ]
            )
            again = c.client.call("POST", "/auth/token/refresh", {"refresh": refresh})
            winners = [a for a in answers if a.status == 200]
            ok = len(winners) == 1 and all(a.status == 401 for a in answers if a.status != 200)
            ok = ok and again.status == 401
            if winners:  # the winner's new refresh token works once more
                fresh = winners[0].json().get("refresh", "")
                ok = ok and c.client.call("POST", "/auth/token/refresh", {"refresh": fresh}).status == 200
            row.notes.append(f"round: {statuses(answers)}; old token again: {again.status}")
            row.held = ok if not row.notes[:-1] else row.held and ok
        row.got = "; ".join(n.split(";")[0].removeprefix("round: ") for n in row.notes)


def unknown_keys(c: Campaign, token: str, task_id: str, refresh: str) -> None:
    writes = [
        ("/tasks", task_body("Is this spam?", lables=["a", "b"]), "lables"),
        ("/tasks", task_body("Is this spam?", callbackurl="https://example.com/"), "callbackurl"),
        ("/tasks/batch", {"tasks": [task_body("Is this spam?")], "priority": "batch"}, "priority"),
        ("/tasks/batch", {"tasks": [task_body("Is this spam?", agnet="auto")]}, "agnet"),
        (f"/tasks/{task_id}/feedback", {"accepted": True, "acepted": False}, "acepted"),
        ("/auth/logout", {"refresh": refresh, "everywhere": True}, "everywhere"),
        ("/auth/webhook-secret", {"secret": "mine"}, "secret"),
    ]
    with c.category("unknown JSON keys on writes", "400 naming the key") as row:
        good = 0
        for path, body, key in writes:
            answer = c.client.call("POST", path, body, token=token)
            if answer.status == 400 and key in answer.body.decode(errors="replace"):
                good += 1
            else:
                row.notes.append(f"{path} {key}: {answer.status} {answer.body[:150]!r}")
        answer = c.client.call(
            "POST", "/auth/register", {"username": "typo-user", "password": PASSWORD, "emial": "x@y.z"}
        )
        if answer.status in (400, 429) and (answer.status == 429 or "emial" in answer.body.decode()):
            good += 1
        else:
            row.notes.append(f"/auth/register emial: {answer.status} {answer.body[:150]!r}")
        row.got = f"{good}/{len(writes) + 1} refused naming the key"
        row.held = good == len(writes) + 1


def operator_writes(c: Campaign, operator_token: str) -> None:
    with c.category("operator on buyer-only writes", "403 buyers_only, no task") as row:
        answers = [
            c.client.call("POST", "/tasks", task_body("operator writes"), token=operator_token),
            c.client.call("POST", "/tasks/batch", {"tasks": [task_body("operator")]}, token=operator_token),
        ]
        row.got = statuses(answers)
        row.held = all(a.status == 403 and b"buyers_only" in a.body for a in answers)


PAGE_PATHS = ["/static/nope.css", "/static/../aicp/settings.py", "/admin/nope/", "/dashboard/nope"]


def unknown_paths(c: Campaign, token: str) -> None:
    page = [c.client.call("GET", p) for p in PAGE_PATHS]
    with c.category("unknown page paths (/static/, /admin/)", "404 without the URL pattern list") as row:
        listed = [p for p, a in zip(PAGE_PATHS, page, strict=True) if b"URLconf" in a.body]
        row.got = f"{statuses(page)}; {len(listed)} show Django's debug 404 listing every URL pattern"
        row.notes += [f"debug page at {p}" for p in listed]
        # An anonymous /admin/ path is a 302 to the admin's login page (which lists nothing): that holds.
        row.held = not listed and all(
            a.status == 404 or (a.status == 302 and p.startswith("/admin/"))
            for p, a in zip(PAGE_PATHS, page, strict=True)
        )
        row.sent += len(page)
    paths = [
        "/nope",
        "/api/v2/tasks",
        "/tasks/1/2/3/4",
        "/auth/",
        "/.env",
        "/wp-login.php",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/tasks/" + "a" * 2000,
        "/model/versions/99999999999/promote",
        "/agents/" + "%00",
        "/api/schema/../../etc",
    ]
    with c.category("unknown API paths", "JSON 404, no debug page") as row:
        answers = [c.client.call("GET", p, token=t) for p in paths for t in ("", token)]
        bad = [
            a
            for a in answers
            if a.status >= 500
            or not a.content_type.startswith("application/json")
            or b"URLconf" in a.body
            or b"Traceback" in a.body
            or b"DEBUG = True" in a.body
        ]
        row.got = f"{statuses(answers)}; {len(bad)} not JSON or debug page"
        row.held = not bad and all(a.status in (400, 401, 404, 405) for a in answers)
        bad_paths = [p for p, t in ((p, t) for p in paths for t in ("", token))]
        for p, a in zip(bad_paths, answers, strict=True):
            if a in bad:
                row.notes.append(f"{p[:60]}: {a.status} {a.content_type} {a.body[:80]!r}")


def health(c: Campaign, buyer_token: str, operator_token: str) -> None:
    with c.category("/health anonymous and as a buyer", "status only; details for operators") as row:
        public = [c.client.call("GET", "/health", token=t) for t in ("", buyer_token, "garbage.token.x")]
        private = c.client.call("GET", "/health", token=operator_token)
        leaks = [
            a for a in public if set(a.json()) != {"status"} or b"http" in a.body or b"127.0.0.1" in a.body
        ]
        keys = sorted({k for a in public for k in a.json()})
        row.got = f"public keys {keys}; operator keys {sorted(private.json())}"
        row.held = not leaks and "llm" in private.json()


def admin_session(c: Campaign) -> dict[str, str]:
    """A session cookie of the operator through /admin/login/ (as a browser: CSRF cookie and token)."""
    page = c.client.call("GET", "/admin/login/?next=/admin/")
    cookies = _cookies(page)
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    assert token, "no CSRF token on the admin login page"
    form = urllib.parse.urlencode(
        {
            "csrfmiddlewaretoken": token.group(1).decode(),
            "username": OPERATOR[0],
            "password": OPERATOR[1],
            "next": "/admin/",
        }
    ).encode()
    answer = c.client.call(
        "POST",
        "/admin/login/?next=/admin/",
        raw=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": _cookie_header(cookies),
            "Referer": f"http://127.0.0.1:{c.client.port}/admin/login/",
            "Origin": f"http://127.0.0.1:{c.client.port}",
        },
    )
    cookies |= _cookies(answer)
    assert answer.status == 302 and "sessionid" in cookies, f"admin login failed: {answer.status}"
    return cookies


def _cookies(answer: Answer) -> dict[str, str]:
    found = {}
    for line in answer.headers.get("set-cookie", "").split("\n"):
        for part in re.findall(r"(?:^|,\s*)(csrftoken|sessionid)=([^;]*)", line):
            found[part[0]] = part[1]
    return found


def admin_sweep(c: Campaign) -> None:
    from django.contrib import admin
    from django.db import models

    with c.category("admin hostile filters and searches", "a page (200, 302 to ?e=1, 400), never 5xx") as row:
        cookie = _cookie_header(admin_session(c))
        urls = []
        hostile = ["x", "%00", "1e999", "-1", "'; DROP TABLE x;--", "[]", "2026-13-45"]
        for model in admin.site._registry:
            base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
            urls += [base, f"{base}?q=%00%27%22", f"{base}?o=99.-98", f"{base}?p=999999", f"{base}?e=1"]
            fields = [f for f in model._meta.get_fields() if isinstance(f, models.Field) and f.concrete]
            for index, fld in enumerate(fields[:10]):
                value = urllib.parse.quote(hostile[index % len(hostile)])
                urls.append(f"{base}?{fld.name}__contains={value}")
                urls.append(f"{base}?{fld.name}__gt={value}&{fld.name}__isnull=maybe")
            urls.append(f"{base}?labels__contains=x")
            urls.append(f"{base}?nonexistent__field=1")
        answers = [
            c.client.call("GET", url, headers={"Cookie": cookie, "Accept": "text/html"}) for url in urls
        ]
        errors = [(url, a.status) for url, a in zip(urls, answers, strict=True) if a.status >= 500]
        row.got = f"{statuses(answers)} over {len(admin.site._registry)} models"
        # 400: Django's own answer to a lookup across relations the admin does not allow.
        row.held = not errors and all(a.status in (200, 302, 400) for a in answers)
        for url, status in errors[:5]:
            row.notes.append(f"{status} {url}")


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


MONEY_KEYS = {"balance", "held", "price", "cost", "earned", "amount", "total", "total_price"}


def _money_strings(value: object) -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in MONEY_KEYS and isinstance(item, str | int | float):
                found.append(str(item))
            found += _money_strings(item)
    elif isinstance(value, list):
        for item in value:
            found += _money_strings(item)
    return found


def amounts(c: Campaign, run: str) -> str:
    """Large and tiny balances: exact in the database and in the API, never in exponent form."""
    from ledger.models import Account, LedgerEntry
    from ledger.services import buyer_credit
    from users.services import buyer_register

    with c.category("large and tiny amounts", "exact balances, plain decimals") as row:
        whale = buyer_register(username=f"{run}-whale", password=PASSWORD)
        for _ in range(120):
            buyer_credit(user_id=whale.pk, amount=Decimal("999999999.9999"), memo="attack run")
        buyer_credit(user_id=whale.pk, amount=Decimal("0.0001"), memo="attack run")
        expected = Decimal("100.0000") + 120 * Decimal("999999999.9999") + Decimal("0.0001")
        minnow = buyer_register(username=f"{run}-minnow", password=PASSWORD)
        buyer_credit(user_id=minnow.pk, amount=Decimal("0.0001"), memo="attack run")
        token_w, token_m = access_token(whale), access_token(minnow)
        task = c.client.call("POST", "/tasks", task_body("Is a whale a fish?"), token=token_w)
        me_w = c.client.call("GET", "/auth/me", token=token_w).json()
        me_m = c.client.call("GET", "/auth/me", token=token_m).json()
        listing = c.client.call("GET", "/tasks", token=token_w).json()
        agents = c.client.call("GET", "/agents", token=token_w).json()
        stored = Account.objects.get(user=whale, kind=Account.Kind.BUYER).balance
        summed = sum(
            (e.amount for e in LedgerEntry.objects.filter(account__user=whale, account__kind="buyer")),
            Decimal(0),
        )
        price = Decimal(task.json().get("price", "0"))
        strings = _money_strings([me_w, me_m, task.json(), listing, agents])
        exponent = [s for s in strings if "e" in s.lower()]
        # The task either still holds its price in escrow or has been paid out of it.
        spent = Decimal(me_w.get("held", "0")) + (price if Decimal(me_w.get("held", "0")) == 0 else 0)
        ok = Decimal(me_w.get("balance", "0")) + spent == expected and stored == Decimal(
            me_w.get("balance", "-1")
        )
        ok = ok and summed == stored and me_m.get("balance") == "100.0001" and me_m.get("held") == "0.0000"
        ok = (
            ok
            and task.status == 201
            and not exponent
            and re.fullmatch(r"\d+\.\d{4}", me_w.get("balance", ""))
        )
        row.got = (
            f"balance {me_w.get('balance')} + held {me_w.get('held')} + paid = {expected} credited; "
            f"tiny {me_m.get('balance')}; {len(strings)} money strings, {len(exponent)} in exponent form"
        )
        row.held = ok
    return token_w


def ssrf(c: Campaign, token: str) -> None:
    targets = [
        "http://127.0.0.1/hook",
        "http://127.0.0.1:8000/admin/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://localhost/",
        "http://localhost.:8000/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://127.1/",
        "http://100.64.0.1/",
        "http://metadata.google.internal/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_INFO",
        "ftp://10.0.0.1/",
    ]
    with c.category("webhook SSRF via callback_url", "400 on POST /tasks and /tasks/batch") as row:
        answers = []
        for url in targets:
            answers.append(c.client.call("POST", "/tasks", task_body("ssrf", callback_url=url), token=token))
            batch = {"tasks": [task_body("ssrf batch", callback_url=url)]}
            answers.append(c.client.call("POST", "/tasks/batch", batch, token=token))
        refused = [a for a in answers if a.status == 400]
        row.got = statuses(answers)
        row.held = len(refused) == len(answers)
        for url, a in zip([u for u in targets for _ in (0, 1)], answers, strict=True):
            if a.status != 400:
                row.notes.append(f"{url}: {a.status} {a.body[:120]!r}")


def schemathesis(
    c: Campaign, port: int, label: str, token: str, args: argparse.Namespace, data: Path
) -> None:
    # In the run's folder: schemathesis keeps a cache (.schemathesis/) in its working directory.
    har = data / f"schemathesis-{label}.har"
    command = [
        str(Path(PYTHON).parent / "schemathesis"),
        "run",
        f"http://127.0.0.1:{port}/api/schema/",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        str(args.examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--workers",
        "2",
        "--seed",
        "20",
        "--generation-database",
        "none",
        "--continue-on-failure",
        "--no-color",
        "--request-timeout",
        "60",
        "-H",
        f"Authorization: Bearer {token}",
        "--report",
        "har",
        "--report-har-path",
        str(har),
        "--warnings",
        "off",
    ]
    with c.category(f"schemathesis as {label}", "0 × 5xx") as row:
        log = data / f"schemathesis-{label}.log"
        with log.open("wb") as out:
            subprocess.run(command, cwd=data, stdout=out, stderr=subprocess.STDOUT, timeout=1800)
        entries = json.loads(har.read_text())["log"]["entries"]
        codes = Counter(entry["response"]["status"] for entry in entries)
        server_errors = sum(count for status, count in codes.items() if status >= 500 or status == 0)
        row.sent += len(entries)
        row.got = f"{server_errors} × 5xx ({', '.join(f'{n}×{s}' for s, n in sorted(codes.items()))})"
        row.held = server_errors == 0 and len(entries) > 0
        for entry in entries:
            if entry["response"]["status"] >= 500:
                row.notes.append(f"{entry['request']['method']} {entry['request']['url'][:160]}")
                if len(row.notes) >= 5:
                    break


def races(c: Campaign, run: str, args: argparse.Namespace) -> list:
    """Several buyers at once, single submissions and batches, and one Idempotency-Key raced."""
    buyers = [new_buyer(f"{run}-racer-{i}", Decimal("100000")) for i in range(args.race_buyers)]
    tokens = [access_token(b) for b in buyers]
    with c.category(
        f"races: {args.race_buyers} buyers × (POST /tasks, /tasks/batch) at once", "every 201 is one task"
    ) as row:
        calls: list[Callable[[], Answer]] = []
        for b, token in enumerate(tokens):
            for i in range(args.race_tasks):
                calls.append(
                    lambda t=token, b=b, i=i: c.client.call(
                        "POST", "/tasks", task_body(f"race {b}-{i}"), token=t
                    )
                )
            for j in range(args.race_batches):
                items = [task_body(f"race batch {b}-{j}-{k}") for k in range(10)]
                calls.append(
                    lambda t=token, items=items: c.client.call(
                        "POST", "/tasks/batch", {"tasks": items}, token=t
                    )
                )
            key = f"{run}-idem-{b}"
            for _ in range(5):  # one key raced five times: one task
                calls.append(
                    lambda t=token, key=key, b=b: c.client.call(
                        "POST",
                        "/tasks",
                        task_body(f"idempotent {b}"),
                        token=t,
                        headers={"Idempotency-Key": key},
                    )
                )
        answers = _pool(calls, threads=args.race_threads)
        single = [a for a in answers if a.status == 201 and "id" in a.json()]
        batch_ids = [
            t["id"] for a in answers if a.status in (200, 201) for t in a.json().get("tasks", []) if "id" in t
        ]
        ids = {a.json()["id"] for a in single} | set(batch_ids)
        from tasks.models import Task

        created = Task.objects.filter(buyer__in=buyers).count()
        expected_tasks = args.race_buyers * (args.race_tasks + 10 * args.race_batches + 1)
        row.got = (
            f"{statuses(answers)}; {len(ids)} distinct task ids answered, {created} tasks in the database "
            f"(expected {expected_tasks}: one per Idempotency-Key raced 5×)"
        )
        row.held = created == len(ids) == expected_tasks and all(a.status in (200, 201, 409) for a in answers)
    return buyers


def _pool(calls: list[Callable[[], Answer]], threads: int) -> list[Answer]:
    answers: list[Answer] = []
    lock = threading.Lock()
    pending = list(reversed(calls))

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                call = pending.pop()
            answer = call()
            with lock:
                answers.append(answer)

    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return answers


def authorization(c: Campaign, buyers: list) -> None:
    from tasks.models import Task

    a, b = buyers[0], buyers[1]
    token_a = access_token(a)
    theirs = [str(pk) for pk in Task.objects.filter(buyer=b).values_list("pk", flat=True)[:10]]
    mine = [str(pk) for pk in Task.objects.filter(buyer=a).values_list("pk", flat=True)[:3]]
    with c.category("authorization: buyer A on buyer B's tasks", "404 (or 403); nothing of B listed") as row:
        answers = []
        for task_id in theirs:
            answers.append(c.client.call("GET", f"/tasks/{task_id}", token=token_a))
            answers.append(c.client.call("GET", f"/tasks/{task_id}/deliveries", token=token_a))
            answers.append(
                c.client.call("POST", f"/tasks/{task_id}/feedback", {"accepted": False}, token=token_a)
            )
            answers.append(
                c.client.call(
                    "POST",
                    f"/tasks/{task_id}/feedback",
                    {"accepted": False, "correct_label": "no"},
                    token=token_a,
                )
            )
        denied = all(answer.status in (403, 404) for answer in answers)
        export = c.client.call("GET", "/tasks/export", token=token_a, headers={"Accept": "*/*"})
        export_csv = c.client.call(
            "GET", "/tasks/export?format=csv", token=token_a, headers={"Accept": "*/*"}
        )
        listing = c.client.call("GET", "/tasks?limit=1000", token=token_a)
        leaked = [t for t in theirs if t.encode() in export.body + export_csv.body + listing.body]
        own_seen = all(t.encode() in export.body for t in mine)
        anonymous = [c.client.call("GET", f"/tasks/{t}") for t in theirs[:3]] + [
            c.client.call("GET", "/tasks/export")
        ]
        row.got = (
            f"{statuses(answers)}; export {export.status}/{export_csv.status}, "
            f"{len(leaked)} of B's ids leaked; anonymous {statuses(anonymous)}"
        )
        row.held = denied and not leaked and own_seen and all(x.status == 401 for x in anonymous)
        row.held = row.held and export.status == 200 and export_csv.status == 200


def wait_settled(timeout_s: float) -> tuple[int, int]:
    from tasks.models import Task

    deadline = time.monotonic() + timeout_s
    while True:
        left = Task.objects.exclude(status__in=Task.FINAL_STATUSES).count()
        if left == 0 or time.monotonic() > deadline:
            return Task.objects.count(), left
        time.sleep(1)


def ledger(c: Campaign, args: argparse.Namespace) -> None:
    from django.db.models import Count, Q, Sum

    from ledger.models import Account, LedgerEntry
    from tasks.models import Task

    with c.category("ledger exact after every task settled", "sums = balances, escrow 0, paid once") as row:
        total, left = wait_settled(args.settle_s)
        problems = []
        sums = dict(
            LedgerEntry.objects.values_list("account").annotate(s=Sum("amount")).values_list("account", "s")
        )
        for account in Account.objects.all():
            if sums.get(account.pk, Decimal(0)) != account.balance:
                problems.append(
                    f"account {account.pk}: entries {sums.get(account.pk)} != balance {account.balance}"
                )
        unbalanced = (
            LedgerEntry.objects.values("transaction_id").annotate(s=Sum("amount")).exclude(s=0).count()
        )
        if unbalanced:
            problems.append(f"{unbalanced} postings do not sum to zero")
        escrow = Account.objects.filter(kind=Account.Kind.ESCROW).exclude(balance=0).count()
        if escrow:
            problems.append(f"{escrow} escrow accounts not at 0")
        per_task = Task.objects.annotate(
            holds=Count(
                "ledger_entries", filter=Q(ledger_entries__kind="hold", ledger_entries__amount__lt=0)
            ),
            payouts=Count(
                "ledger_entries", filter=Q(ledger_entries__kind="payout", ledger_entries__amount__lt=0)
            ),
            releases=Count(
                "ledger_entries", filter=Q(ledger_entries__kind="release", ledger_entries__amount__lt=0)
            ),
        )
        completed = per_task.filter(status="completed")
        failed = per_task.filter(status="failed")
        bad_completed = completed.exclude(holds=1, payouts=1, releases=0).count()
        bad_failed = failed.exclude(holds=1, payouts=0, releases=1).count()
        if bad_completed or bad_failed:
            problems.append(
                f"{bad_completed} completed and {bad_failed} failed tasks not settled exactly once"
            )
        paid = per_task.filter(payouts__gt=1).count()
        row.got = (
            f"{total} tasks ({completed.count()} completed, {failed.count()} failed, {left} unfinished), "
            f"{Account.objects.count()} accounts, {LedgerEntry.objects.count()} entries; "
            f"{len(problems)} problems"
        )
        row.notes += problems[:8]
        row.held = not problems and left == 0 and paid == 0


def public_debug(c: Campaign, env: dict[str, str]) -> None:
    """A debug instance (public development key, DEBUG on) must refuse a non-loopback address."""
    with c.category(
        "DEBUG / development key on 0.0.0.0", "refused to start (run_system and AICP_HOST)"
    ) as row:
        debug_env = {**env, "DJANGO_DEBUG": "1"}
        debug_env.pop("DJANGO_SECRET_KEY", None)  # the public development key
        port = str(free_port())
        tries = [
            [PYTHON, MANAGE, "run_system", "--host", "0.0.0.0", "--port", port],
            [PYTHON, MANAGE, "run_system", "--host", "::", "--port", port],
        ]
        results = [
            subprocess.run(t, cwd=REPO, env=debug_env, capture_output=True, text=True, timeout=120)
            for t in tries
        ]
        checked = subprocess.run(
            [PYTHON, MANAGE, "check"],
            cwd=REPO,
            env={**debug_env, "AICP_HOST": "0.0.0.0"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        results.append(checked)
        refused = [r for r in results if r.returncode != 0 and "Refusing to listen" in r.stdout + r.stderr]
        row.got = f"{len(refused)}/{len(results)} refused"
        row.held = len(refused) == len(results)
        row.notes += [(r.stdout + r.stderr)[-200:] for r in results if r not in refused]


def fault_tests(c: Campaign, args: argparse.Namespace) -> None:
    """The fault-injection tests of the project, run as they are (their own stack, own Redis)."""
    runs = [
        (
            "worker killed mid-task (tests/faults/test_recovery_time.py)",
            "tests/faults/test_recovery_time.py",
            "passes: re-run within 30 s, paid once",
        ),
        (
            "Redis stopped during submissions (tests/faults/test_broker_down.py)",
            "tests/faults/test_broker_down.py",
            "passes: 24 requests, 24 tasks, 201s, each run once",
        ),
    ]
    for name, path, expected in runs:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AICP_", "DJANGO_", "DATABASE_URL"))}
        with c.category(name, expected) as row:
            started = time.monotonic()
            result = subprocess.run(
                [PYTHON, "-m", "pytest", path, "-q", "-s", "-p", "no:cacheprovider", "-m", ""],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=1200,
            )
            summary = [
                line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed|skipped)", line)
            ]
            figures = [
                line.strip() for line in result.stdout.splitlines() if "after" in line and " s" in line
            ]
            row.got = f"{(summary or ['?'])[-1].strip('= ')} in {time.monotonic() - started:.0f} s"
            row.notes += figures[:4]
            row.held = result.returncode == 0 and "passed" in row.got and "failed" not in row.got


# --- main -----------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--postgres", default="", help="DATABASE_URL of a database of its own (dropped first)"
    )
    parser.add_argument("--redis", default="", help="AICP_REDIS_URL (e.g. redis://127.0.0.1:6379/9)")
    parser.add_argument("--production", action="store_true", help="DJANGO_DEBUG=0 (default: 1, as make run)")
    parser.add_argument("--examples", type=int, default=15, help="schemathesis --max-examples per operation")
    parser.add_argument("--race-buyers", type=int, default=5)
    parser.add_argument("--race-tasks", type=int, default=40, help="single POST /tasks per racing buyer")
    parser.add_argument(
        "--race-batches", type=int, default=4, help="POST /tasks/batch of 10 per racing buyer"
    )
    parser.add_argument("--race-threads", type=int, default=24)
    parser.add_argument("--latency-ms", type=int, default=50, help="the LLM simulator's latency")
    parser.add_argument("--settle-s", type=float, default=300, help="how long to wait for every task to end")
    parser.add_argument(
        "--fault-tests", action="store_true", help="also run the worker-kill and Redis-down tests"
    )
    args = parser.parse_args()

    started_at = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = load_average()
    began = time.monotonic()
    run = f"atk{uuid.uuid4().hex[:6]}"
    if args.postgres:
        recreate_postgres_database(args.postgres)
    if args.redis:
        flush_redis_database(args.redis)
    with tempfile.TemporaryDirectory(prefix="aicp-attack-") as tmp, Stack(Path(tmp), args) as stack:
        data = Path(tmp)
        print(
            f"stack up on 127.0.0.1:{stack.port} ({'PostgreSQL' if args.postgres else 'SQLite'}"
            f"{' + Redis' if args.redis else ''}); data in {data}",
            flush=True,
        )
        apply_env(stack.env)
        import django

        django.setup()
        from rest_framework_simplejwt.tokens import RefreshToken

        from users.models import User

        c = Campaign(Client(stack.port))
        operator = User.objects.get(username=OPERATOR[0])
        operator_token = access_token(operator)

        signups_spoofed(c, run)
        signups_concurrent(c, run)
        refresh_fork(c, run)
        buyer = new_buyer(f"{run}-main", Decimal("1000"))
        buyer_token = access_token(buyer)
        first = c.client.call("POST", "/tasks", task_body("Is water wet?"), token=buyer_token)
        unknown_keys(
            c, buyer_token, first.json().get("id", str(uuid.uuid4())), str(RefreshToken.for_user(buyer))
        )
        operator_writes(c, operator_token)
        unknown_paths(c, buyer_token)
        health(c, buyer_token, operator_token)
        ssrf(c, buyer_token)
        amounts(c, run)
        reset_throttles()
        schemathesis(c, stack.port, "buyer", buyer_token, args, data)
        schemathesis(c, stack.port, "operator", operator_token, args, data)
        buyers = races(c, run, args)
        authorization(c, buyers)
        admin_sweep(c)
        ledger(c, args)
        public_debug(c, stack.env)
        if args.fault_tests:
            fault_tests(c, args)
        log_text = stack.log.read_text(errors="replace")
        errors_logged = len(re.findall(r"Internal Server Error", log_text))
        exceptions = Counter(re.findall(r"^(\w+(?:\.\w+)*(?:Error|Exception)): (.{0,100})", log_text, re.M))

    engine = "PostgreSQL" + (" + Redis" if args.redis else "") if args.postgres else "SQLite, ORM broker"
    print()
    print(f"attack run {started_at}, {engine}, DEBUG {'off' if args.production else 'on'}")
    print(f"command: {command_line()}")
    print(f"load average before {load_before}, after {load_average()}; {time.monotonic() - began:.0f} s")
    print(f"server log: {errors_logged} 'Internal Server Error' lines")
    for (kind, message), count in exceptions.most_common(10):
        print(f"  {count}× {kind}: {message}")
    print()
    print(c.table())
    return 0 if all(row.held for row in c.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
