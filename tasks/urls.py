from django.urls import re_path

from tasks.api import TaskDetailApi, TaskFeedbackApi, TaskListApi
from tasks.webhooks.api import TaskDeliveriesApi

urlpatterns = [
    re_path(r"^tasks/?$", TaskListApi.as_view(), name="task-list"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/deliveries/?$", TaskDeliveriesApi.as_view(), name="task-deliveries"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/feedback/?$", TaskFeedbackApi.as_view(), name="task-feedback"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", TaskDetailApi.as_view(), name="task-detail"),
]
