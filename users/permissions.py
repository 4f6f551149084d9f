"""Who may call what, beyond being signed in."""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView


class IsBuyerOrReadOnly(BasePermission):
    """Reads for every signed-in user; writes (spending a buyer's balance) for buyers only.

    An operator has no buyer account to pay from: without this, POST /tasks answered an operator with a
    puzzling 402 insufficient_funds instead of saying the endpoint is not for them.
    """

    message = "Only buyer accounts can do this; operators have no balance to spend."
    code = "buyers_only"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return request.method in SAFE_METHODS or not request.user.is_operator
