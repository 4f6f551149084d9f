from django.urls import re_path

from agents.api import AgentDetailApi, AgentListApi

urlpatterns = [
    re_path(r"^agents/?$", AgentListApi.as_view(), name="agent-list"),
    re_path(r"^agents/(?P<name>[-a-zA-Z0-9_]+)/?$", AgentDetailApi.as_view(), name="agent-detail"),
]
