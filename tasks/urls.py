from django.urls import re_path

from tasks.api import TaskBatchApi, TaskDetailApi, TaskExportApi, TaskFeedbackApi, TaskListApi
from tasks.webhooks.api import TaskDeliveriesApi

urlpatterns = [
    re_path(r"^tasks/?$", TaskListApi.as_view(), name="task-list"),
    re_path(r"^tasks/batch/?$", TaskBatchApi.as_view(), name="task-batch"),
    re_path(r"^tasks/export/?$", TaskExportApi.as_view(), name="task-export"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/deliveries/?$", TaskDeliveriesApi.as_view(), name="task-deliveries"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/feedback/?$", TaskFeedbackApi.as_view(), name="task-feedback"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", TaskDetailApi.as_view(), name="task-detail"),
]
