"""WSGI entry point (gunicorn aicp.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aicp.settings")
application = get_wsgi_application()
