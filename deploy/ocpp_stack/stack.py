"""The whole deployment as one CloudFormation stack: what the AWS sample deploys, from this
repository's parts (docs/deploying-aws.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, CfnOutput, Stack, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import Construct

from .iot import IotResources, build_iot
from .nag import suppress_justified_findings
from .processor import Processor, build_processor
from .service import GatewayService, build_gateway_service
from .settings import StackSettings, settings_from_context

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
STACK_NAME = "OcppGateway"
# CDK feature flags this app relies on.  removeDefaultDesiredCount: a service without a desired
# count gets none in the template (instead of 1), so that a deploy leaves the scaled count alone.
FEATURE_FLAGS = {"@aws-cdk/aws-ecs:removeDefaultDesiredCount": True}


class GatewayStack(Stack):
    """VPC, ECS on Fargate behind an NLB, IoT policy/certificate/rules, the Lambda processor."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: StackSettings,
        repo_root: Path = REPO_ROOT,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = settings
        self.iot: IotResources = build_iot(self, settings)
        self.gateway: GatewayService = build_gateway_service(
            self,
            settings,
            repo_root=repo_root,
            iot_endpoint=self.iot.data_endpoint,
            identity_secret=self.iot.identity_secret,
        )
        # The secret holds a random placeholder until the certificate function has written it.
        self.gateway.service.node.add_dependency(self.iot.certificate)
        self.processor: Processor = build_processor(
            self,
            settings,
            repo_root=repo_root,
            data_endpoint=self.iot.data_endpoint,
            errors_action=self.iot.rule_errors_action,
        )
        CfnOutput(
            self,
            "websocketURL",
            value=self.gateway.websocket_url,
            description="Charge points connect to <websocketURL>/<charge point id>",
        )
        CfnOutput(
            self,
            "iotDataEndpoint",
            value=self.iot.data_endpoint,
            description="The account's AWS IoT data endpoint (iot:Data-ATS)",
        )
        CfnOutput(
            self,
            "heartbeatTableName",
            value=self.iot.heartbeat_table.table_name,
            description="DynamoDB table of each charge point's last Heartbeat",
        )
        suppress_justified_findings(self)


def build_app(
    context: Mapping[str, Any] | None = None, *, outdir: str | None = None
) -> tuple[App, GatewayStack]:
    """The CDK app with the stack and cdk-nag's AwsSolutions checks; ``context`` as ``-c`` gives it."""
    app = App(context={**FEATURE_FLAGS, **(context or {})}, outdir=outdir)
    settings = settings_from_context(app.node.try_get_context)
    stack = GatewayStack(app, STACK_NAME, settings=settings)
    # cdk-nag 3: a policy-validation plugin; a finding not acknowledged (nag.py) stops the synthesis.
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, stack
