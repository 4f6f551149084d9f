"""Duke's background work yields the CPU: its queue cluster's workers run at a low scheduling priority.

Training and encoding are CPU-bound for seconds to minutes; the drainers that execute paid tasks are
short bursts of CPU between LLM calls. On the 2-core box, with both in the same cluster at the same
priority, a labeling workload completed 16.7 tasks/s while Duke learned and 73.4/s without learning.
With DUKE_LEARNING_CLUSTER set, the learning jobs go to their own cluster (duke.jobs), and each of its
workers lowers its priority to DUKE_LEARNING_NICE as it starts, whoever started the cluster: the kernel
then gives the CPU to paid execution whenever both want it, and to learning whenever paid work waits on
the LLM. Priority cannot be raised back without privileges, which is the point.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django_q.conf import Conf

logger = logging.getLogger("duke")


def in_learning_cluster() -> bool:
    return bool(settings.DUKE_LEARNING_CLUSTER) and Conf.CLUSTER_NAME == settings.DUKE_LEARNING_CLUSTER


def lower_learning_priority(**kwargs: object) -> None:
    """django-q2's post_spawn: a worker process has started; in the learning cluster, it steps back."""
    if not in_learning_cluster():
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current < settings.DUKE_LEARNING_NICE:
        os.setpriority(os.PRIO_PROCESS, 0, settings.DUKE_LEARNING_NICE)
    policy = ""
    if settings.DUKE_LEARNING_SCHED_IDLE and hasattr(os, "SCHED_IDLE"):
        # Linux's idle class: the worker runs only on a core nothing else wants, and any other task that
        # wakes up takes the core at once (nice 19 alone still took a quarter of the paid throughput).
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        policy = " (SCHED_IDLE)"
    logger.info(
        "Duke learning worker %s runs at nice %d%s",
        kwargs.get("proc_name", os.getpid()),
        os.getpriority(os.PRIO_PROCESS, 0),
        policy,
    )
