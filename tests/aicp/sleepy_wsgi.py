"""A WSGI app for the web worker's test: answers with its process id after sleeping ?ms= milliseconds."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from urllib.parse import parse_qs


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    delay_ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["0"])[0])
    time.sleep(delay_ms / 1000)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
