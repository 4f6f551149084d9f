"""Read-only agent directory."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from agents.pricing import reputation_multiplier
from agents.selectors import agent_get, agent_list


class AgentOutputSerializer(serializers.ModelSerializer):
    tasks_done = serializers.IntegerField(read_only=True)
    success_rate = serializers.FloatField(read_only=True, allow_null=True)
    reputation = serializers.SerializerMethodField()

    class Meta:
        model = Agent
        fields = ["name", "backend", "model", "price_per_unit", "tasks_done", "success_rate", "reputation"]

    def get_reputation(self, agent: Agent) -> str:
        return str(reputation_multiplier(agent.success_count, agent.failure_count))


class AgentDetailOutputSerializer(AgentOutputSerializer):
    class Meta(AgentOutputSerializer.Meta):
        fields = [*AgentOutputSerializer.Meta.fields, "success_count", "failure_count", "earnings"]


class AgentListApi(APIView):
    @extend_schema(responses=AgentOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(AgentOutputSerializer(agent_list(), many=True).data)


class AgentDetailApi(APIView):
    @extend_schema(responses=AgentDetailOutputSerializer)
    def get(self, request: Request, name: str) -> Response:
        return Response(AgentDetailOutputSerializer(agent_get(name=name)).data)
