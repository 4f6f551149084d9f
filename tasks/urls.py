from django.urls import re_path

from tasks.api import TaskDetailApi, TaskFeedbackApi, TaskListApi

urlpatterns = [
    re_path(r"^tasks/?$", TaskListApi.as_view(), name="task-list"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/feedback/?$", TaskFeedbackApi.as_view(), name="task-feedback"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", TaskDetailApi.as_view(), name="task-detail"),
]
