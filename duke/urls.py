from django.urls import re_path

from duke.api import ModelStatusApi, ModelTrainApi, ModelVersionListApi, ModelVersionPromoteApi

urlpatterns = [
    re_path(r"^model/status/?$", ModelStatusApi.as_view(), name="model-status"),
    re_path(r"^model/train/?$", ModelTrainApi.as_view(), name="model-train"),
    re_path(r"^model/versions/?$", ModelVersionListApi.as_view(), name="model-versions"),
    # At most 9 digits: a version number beyond that cannot exist, and must not overflow the database.
    re_path(
        r"^model/versions/(?P<number>\d{1,9})/promote/?$",
        ModelVersionPromoteApi.as_view(),
        name="model-version-promote",
    ),
]
