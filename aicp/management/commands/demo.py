"""`manage.py demo`: a buyer pushes a labeled dataset through the HTTP API while you watch Duke take over.

It runs beside a live system (`make run`), on the same machine: it registers (or reuses) a demo buyer
through the API, tops its balance up through the ledger service when it is low, submits one labeling
task per dataset line (the labels are the file's label set), shows progress, and summarises what
happened: tasks, versions trained, production accuracy, Duke's share and the money it saved.
"""

from __future__ import annotations

import json
import random
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import slugify

from core.progress import bar, format_duration, format_rate

MAX_DESCRIPTION = 8000
MAX_LABELS = 100
# The balance is topped up to cover this many times the most expensive quote the run could see.
CREDIT_HEADROOM = Decimal("1.2")
MAX_REPUTATION = Decimal("1.1")
POLL_EVERY_S = 1.0
BAR_WIDTH = 30


@dataclass
class Sample:
    text: str
    label: str


@dataclass
class Run:
    """What this run submitted and what became of it."""

    submitted: int = 0
    rejected: int = 0
    served_by_duke: int = 0
    paid_to_duke: Decimal = Decimal("0")
    llm_unit_quote: Decimal | None = None
    errors: list[str] = field(default_factory=list)
    completed: int = 0
    failed: int = 0
    unfinished: int = 0


def load_dataset(path: Path) -> tuple[list[Sample], int]:
    """The file's usable samples, and how many lines were skipped (not JSON, no text/label, too long)."""
    samples, skipped = [], 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text, label = str(row["text"]).strip(), str(row["label"]).strip()
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            if not text or not label or len(text) > MAX_DESCRIPTION or len(label) > 200:
                skipped += 1
                continue
            samples.append(Sample(text, label))
    return samples, skipped


def task_type_for(path: Path) -> str:
    """`rotten-tomatoes.train.jsonl` → `rotten-tomatoes`."""
    return slugify(path.name.split(".")[0])[:64] or "demo"


@dataclass
class Response:
    status_code: int
    headers: Any
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content or b"null")

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


def _error_text(response: Response) -> str:
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} {error['code']}: {error['message']}"[:300]
    except (ValueError, KeyError, TypeError):
        first_line = response.text.strip().splitlines()[0] if response.text.strip() else ""
        return f"HTTP {response.status_code}: {first_line[:200]}"


class Api:
    """A buyer's JWT session against the HTTP API (stdlib only), refreshing the token when it expires."""

    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.access = ""
        self.username = ""
        self.password = ""

    def send(
        self, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        """One HTTP exchange; raises OSError (URLError) only when no HTTP answer came back."""
        data = None if json_body is None else json.dumps(json_body).encode()
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"Accept": "application/json", "Content-Type": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())

    def login(self, username: str, password: str) -> bool:
        self.username, self.password = username, password
        response = self.send("POST", "/auth/token", json_body={"username": username, "password": password})
        if response.status_code != 200:
            return False
        self.access = response.json()["access"]
        return True

    def request(
        self, method: str, path: str, *, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        for attempt in range(2):
            auth = {**(headers or {}), "Authorization": f"Bearer {self.access}"}
            response = self.send(method, path, json_body=json_body, headers=auth)
            if response.status_code != 401 or attempt or not self.login(self.username, self.password):
                return response
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        response = self.request("GET", path + query)
        return response.json() if response.status_code == 200 else None

    def count(self, status: str) -> int:
        body = self.get_json("/tasks", status=status)
        return int(body["count"]) if body else 0


class Command(BaseCommand):
    _progress_open = False
    verbosity = 1
    _last_line_at = 0.0
    _last_line = ""
    help = (
        "Act as a buyer: submit labeling tasks from a JSONL dataset ({text, label} per line) through the "
        "HTTP API, show progress and summarise what Duke learned. Run it beside `make run`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, help="JSONL file, one {text, label} object a line.")
        parser.add_argument("--tasks", type=int, default=200, help="How many tasks to submit (default 200).")
        parser.add_argument("--task-type", default="", help="Default: the dataset's file name.")
        parser.add_argument(
            "--rate",
            type=float,
            default=5.0,
            help="Submissions per second (default 5; 0: as fast as possible).",
        )
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="The running AICP server.")
        parser.add_argument("--username", default="demo-buyer")
        parser.add_argument("--complexity", type=int, default=1, choices=range(1, 11), metavar="1-10")
        parser.add_argument("--seed", type=int, default=0, help="Shuffles the dataset reproducibly.")
        parser.add_argument(
            "--wait",
            type=float,
            default=600.0,
            help="Seconds to wait for the last tasks to finish (default 600).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.verbosity = options.get("verbosity", 1)
        if options["tasks"] < 1:
            raise CommandError("--tasks must be at least 1.")
        if options["rate"] < 0:
            raise CommandError("--rate must be 0 (no pacing) or positive.")
        path = Path(options["dataset"])
        if not path.is_file():
            raise CommandError(f"No dataset at {path}.")
        samples, skipped = load_dataset(path)
        labels = sorted({sample.label for sample in samples})
        if not 2 <= len(labels) <= MAX_LABELS:
            raise CommandError(
                f"{path} has {len(labels)} distinct labels; a labeling task needs 2 to {MAX_LABELS}."
            )
        random.Random(options["seed"]).shuffle(samples)
        if options["tasks"] > len(samples):
            self.stdout.write(f"The dataset has {len(samples)} usable lines: submitting all of them.")
        samples = samples[: options["tasks"]]
        task_type = options["task_type"] or task_type_for(path)
        if skipped:
            self.stdout.write(f"Skipped {skipped} line(s) without a text and label, or too long.")

        api = Api(options["base_url"])
        try:
            self._check_server(api)
            self._sign_in(api, options["username"])
            self._ensure_balance(api, options["username"], len(samples), options["complexity"])
            self._run(api, samples, labels, task_type, options)
        except OSError as exc:
            raise CommandError(f"Lost the connection to {options['base_url']}: {exc}") from exc

    # --- set-up ---------------------------------------------------------------------------------------

    def _check_server(self, api: Api) -> None:
        try:
            response = api.send("GET", "/health")
        except OSError as exc:
            raise CommandError(
                f"No AICP server answers at {api.base_url} ({exc}). Start one with `make run`."
            ) from exc
        health = (
            response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        )
        # The LLM backend is in /health's details, which only operators see; the demo buyer is not one.
        self.stdout.write(f"Server {api.base_url}: {health.get('status', response.status_code)}.")

    def _password_file(self, username: str) -> Path:
        return Path(settings.DATA_DIR) / f"demo-{slugify(username)}-password.txt"

    def _sign_in(self, api: Api, username: str) -> None:
        secret = self._password_file(username)
        if secret.is_file() and api.login(username, secret.read_text().strip()):
            self.stdout.write(f"Signed in as the demo buyer {username!r}.")
            return
        password = secrets.token_urlsafe(18)
        response = api.send("POST", "/auth/register", json_body={"username": username, "password": password})
        if response.status_code == 409:
            raise CommandError(
                f"A user {username!r} exists but its password is not in {secret}. "
                "Pass --username with another name."
            )
        if response.status_code != 201:
            raise CommandError(f"Registering {username!r} failed: {_error_text(response)}")
        secret.parent.mkdir(parents=True, exist_ok=True)
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        if not api.login(username, password):
            raise CommandError(f"Registered {username!r} but could not sign in.")
        self.stdout.write(f"Registered the demo buyer {username!r} (password saved in {secret}).")

    def _ensure_balance(self, api: Api, username: str, tasks: int, complexity: int) -> None:
        from ledger.services import buyer_credit
        from users.models import User

        me = api.get_json("/auth/me") or {}
        balance = Decimal(me.get("balance", "0"))
        agents = api.request("GET", "/agents").json()
        top_price = max((Decimal(agent["price_per_unit"]) for agent in agents), default=Decimal("0"))
        needed = (top_price * complexity * MAX_REPUTATION * tasks * CREDIT_HEADROOM).quantize(
            Decimal("0.0001")
        )
        if balance >= needed:
            self.stdout.write(f"Balance {balance} covers the run (up to {needed}).")
            return
        # The demo runs on the server's machine, so it credits through the ledger like an operator would.
        user = User.objects.get(username=username)
        buyer_credit(user_id=user.pk, amount=needed - balance, memo="demo credit")
        self.stdout.write(
            f"Credited {needed - balance} to {username!r} through the ledger (balance was {balance})."
        )

    # --- the run --------------------------------------------------------------------------------------

    def _run(self, api: Api, samples: list[Sample], labels: list[str], task_type: str, options: Any) -> None:
        before = self._model_status(api)
        baseline = {status: api.count(status) for status in ("pending", "running", "failed")}
        if baseline["pending"] + baseline["running"]:
            self.stdout.write(
                f"Note: {baseline['pending'] + baseline['running']} task(s) from an earlier run are "
                "unfinished; progress counts them as they finish."
            )
        self.stdout.write(
            f"Submitting {len(samples)} {task_type!r} tasks with labels {', '.join(labels[:8])}"
            f"{' …' if len(labels) > 8 else ''} at {options['rate'] or 'max'} per second."
        )
        run = Run()
        started = time.monotonic()
        interval = 1.0 / options["rate"] if options["rate"] else 0.0
        next_at, next_poll = started, started
        for sample in samples:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at = max(next_at + interval, time.monotonic() - 1.0)  # no burst after a stall
            self._submit(api, run, sample, labels, task_type, options["complexity"])
            if time.monotonic() >= next_poll:
                self._progress(api, run, baseline, len(samples), started)
                next_poll = time.monotonic() + POLL_EVERY_S
        deadline = time.monotonic() + options["wait"]
        while True:
            self._progress(api, run, baseline, len(samples), started)
            if run.unfinished == 0 or time.monotonic() > deadline:
                break
            time.sleep(POLL_EVERY_S)
        self._end_progress_line()
        self._wait_for_training(api, deadline)
        self._summary(api, run, before, time.monotonic() - started, options["complexity"])

    def _wait_for_training(self, api: Api, deadline: float) -> None:
        """The last samples usually start a training: the summary should show what it became."""
        announced = None
        while time.monotonic() < deadline:
            training = self._model_status(api).get("training_in_progress")
            if not training:
                return
            if training.get("version") != announced:
                announced = training.get("version")
                self.stdout.write(f"Waiting for Duke v{announced} to finish training…")
            time.sleep(POLL_EVERY_S)

    def _submit(
        self, api: Api, run: Run, sample: Sample, labels: list[str], task_type: str, complexity: int
    ) -> None:
        body = {
            "description": sample.text,
            "complexity": complexity,
            "task_type": task_type,
            "labels": labels,
        }
        # One key per task: a retried request after a dropped connection or a 429 cannot submit it twice.
        headers = {"Idempotency-Key": str(uuid.uuid4())}
        error = ""
        for _attempt in range(5):
            try:
                response = api.request("POST", "/tasks", json_body=body, headers=headers)
            except OSError as exc:
                error = f"connection: {exc}"
                time.sleep(1.0)
                continue
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1") or 1))
                error = "throttled"
                continue
            break
        else:
            self._reject(run, error)
            return
        if response.status_code != 201:
            self._reject(run, _error_text(response))
            return
        task = response.json()
        run.submitted += 1
        price = Decimal(task["price"])
        if task.get("executed_by") == "duke":
            run.served_by_duke += 1
            run.paid_to_duke += price
        elif task.get("agent") != "duke":
            run.llm_unit_quote = price / complexity

    def _reject(self, run: Run, error: str) -> None:
        run.rejected += 1
        if len(run.errors) < 5:
            run.errors.append(error)

    def _progress(self, api: Api, run: Run, baseline: dict[str, int], total: int, started: float) -> None:
        unfinished = api.count("pending") + api.count("running")
        # Leftovers of an earlier run are indistinguishable here; counting them as ours can only make this
        # run wait a little longer, never end before its own tasks are done.
        run.unfinished = min(unfinished, run.submitted)
        run.failed = max(0, min(api.count("failed") - baseline["failed"], run.submitted - run.unfinished))
        run.completed = run.submitted - run.unfinished - run.failed
        done = run.completed + run.failed + run.rejected
        elapsed = max(time.monotonic() - started, 1e-6)
        share = f"{run.served_by_duke / run.submitted:.0%}" if run.submitted else "0%"
        rate = done / elapsed
        if done >= total:
            timing = f"{format_duration(elapsed)} elapsed"
        else:
            timing = f"{format_duration((total - done) / rate if rate > 0 else None)} left"
        line = (
            f"{bar(done, total, BAR_WIDTH) if total else '[' + '#' * BAR_WIDTH + ']'} {done}/{total} · "
            f"{run.completed} completed · {run.failed} failed · {run.served_by_duke} by Duke ({share}) · "
            f"{format_rate(done / elapsed, 'tasks')} · {timing}"
        )
        if self.verbosity > 0:
            self._write_progress(line)

    def _write_progress(self, line: str) -> None:
        if self.stdout.isatty():
            self.stdout.write("\r\x1b[2K" + line, ending="")
            self.stdout.flush()
            self._progress_open = True
            return
        now = time.monotonic()
        # Logs and pipes get a line when something moved (at most every 5 s), or every 30 s while waiting.
        changed = line.split(" · ")[:3] != self._last_line.split(" · ")[:3]
        finished = line.startswith(f"[{'#' * BAR_WIDTH}]") and changed
        if (changed and now - self._last_line_at >= 5.0) or now - self._last_line_at >= 30.0 or finished:
            self.stdout.write(line)
            self._last_line, self._last_line_at = line, now

    def _end_progress_line(self) -> None:
        if self._progress_open:
            self.stdout.write("")
            self._progress_open = False

    # --- the summary ----------------------------------------------------------------------------------

    def _model_status(self, api: Api) -> dict[str, Any]:
        return api.get_json("/model/status") or {}

    def _summary(self, api: Api, run: Run, before: dict[str, Any], seconds: float, complexity: int) -> None:
        after = self._model_status(api)
        write = self.stdout.write
        write("")
        write(self.style.SUCCESS(f"Demo finished in {seconds:.0f} s"))
        write(
            f"  tasks     {run.submitted} submitted · {run.completed} completed · {run.failed} failed"
            + (f" · {run.unfinished} still unfinished" if run.unfinished else "")
            + (f" · {run.rejected} rejected" if run.rejected else "")
        )
        for error in run.errors:
            write(f"            rejected: {error}")
        if not after:
            write("  Duke      /model/status is not available on this server.")
        else:
            numbers_before = {v.get("version") for v in before.get("versions", [])}
            versions = after.get("versions", [])
            new = sorted(
                (v for v in versions if v.get("version") not in numbers_before), key=lambda v: v["version"]
            )
            listed = ", ".join(f"v{v['version']} {v['status']}" for v in new[-6:])
            write(
                f"  versions  {len(new)} created during the run"
                + (f" ({'… ' if len(new) > 6 else ''}{listed})" if new else "")
                + f", {len(versions)} in total"
            )
            production = after.get("production_version")
            if production is None:
                pending = after.get("training_in_progress")
                why = (
                    f"v{pending['version']} is training (epoch {pending['epoch']}/{pending['epochs']})"
                    if pending
                    else f"{after.get('samples_until_next_training', '?')} samples until the next training"
                )
                write(f"  Duke      no production version yet: {why}.")
            else:
                accuracy = after.get("production_accuracy")
                macro_f1 = after.get("production_macro_f1")
                write(
                    f"  Duke      production v{production} · validation accuracy "
                    f"{'—' if accuracy is None else f'{accuracy:.1%}'} · macro-F1 "
                    f"{'—' if macro_f1 is None else f'{macro_f1:.1%}'}"
                )
        share = run.served_by_duke / run.submitted if run.submitted else 0.0
        write(
            f"  share     Duke served {run.served_by_duke} of {run.submitted} tasks ({share:.1%}) "
            "in the request"
        )
        llm_quote = self._llm_unit_quote(api, run)
        if run.served_by_duke and llm_quote is not None:
            would_pay = llm_quote * complexity * run.served_by_duke
            saved = would_pay - run.paid_to_duke
            write(
                f"  money     Duke's answers cost {run.paid_to_duke:.4f} instead of {would_pay:.4f} "
                f"on the LLM: saved {saved:.4f}"
            )
        else:
            write("  money     nothing saved yet: every task went to the LLM.")
        totals = (after.get("routing") or {}).get("totals") or {}
        if totals.get("money_saved") is not None:
            write(f"  platform  saved by all buyers to date: {totals['money_saved']}")
        write("  Watch it live on /dashboard (log in as an operator).")

    def _llm_unit_quote(self, api: Api, run: Run) -> Decimal | None:
        if run.llm_unit_quote is not None:
            return run.llm_unit_quote
        agents = api.request("GET", "/agents").json()
        llm = [a for a in agents if a.get("backend") != "duke"]
        if not llm:
            return None
        cheapest = min(llm, key=lambda a: Decimal(a["price_per_unit"]))
        return Decimal(cheapest["price_per_unit"]) * Decimal(cheapest.get("reputation") or "1")
