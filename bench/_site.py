"""Benchmark-only settings: production settings, with bench/_urls.py (production URLs + a bare view).

Used as DJANGO_SETTINGS_MODULE by bench/api_load.py, so the bare view never exists in production.
"""

from aicp.settings import *  # noqa: F403

ROOT_URLCONF = "bench._urls"
