"""Security headers the framework does not set by itself."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

# Everything the pages load is served by this site (whitenoise); nothing from a CDN, no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)

# ReDoc needs its inline start-up script and injects its own styles, and it always shows Redocly's logo
# from cdn.redoc.ly: this policy keeps that image (and any other outside request) from leaving the browser.
REDOC_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        # The admin and the API docs ship inline scripts/styles of their own; the policy guards our pages.
        if request.path.startswith("/api/redoc"):
            response.headers.setdefault("Content-Security-Policy", REDOC_CONTENT_SECURITY_POLICY)
        elif not request.path.startswith(("/admin/", "/api/docs")):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
