"""A WSGI app for the web worker's test: answers with its process id after sleeping ?ms= milliseconds.

``?hold=DIR`` holds its thread until the test lets it go: it creates ``DIR/arrived-<pid>-<n>`` (the
request reached a thread of process <pid>) and answers once ``DIR/release`` exists (30 s at most).

``?gc=1`` answers with the process id and how many objects the garbage collector has frozen instead.
Every request keeps one new list alive for good (as caches filled on first use do), so objects that
outlive the first requests can be told from those imported with the app.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qs

kept_for_good: list[list[int]] = []


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    kept_for_good.append([len(kept_for_good)])
    if query.get("gc"):
        body = f"{os.getpid()} {gc.get_freeze_count()}".encode()
    elif query.get("hold"):
        gate = Path(query["hold"][0])
        (gate / f"arrived-{os.getpid()}-{len(kept_for_good)}").touch()
        deadline = time.monotonic() + 30
        while not (gate / "release").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        body = str(os.getpid()).encode()
    else:
        time.sleep(int(query.get("ms", ["0"])[0]) / 1000)
        body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
