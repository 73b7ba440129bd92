"""The message processor as an AWS Lambda function behind an IoT rule on ``+/in``.

The function's code is the repository's ``gateway`` and ``iotshared`` packages plus their
dependencies (bundling.py); boto3 comes with Lambda's runtime.  It answers a CALL with
iot-data Publish to ``<cp-id>/out`` and writes BootNotification into the Thing's shadow, so
its role may do exactly that: ``iot:Publish`` on ``topic/*/out`` and the two shadow calls on
Things, and write its own log group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .bundling import processor_code
from .iot import IOT_SQL_VERSION, iot_arn
from .log_groups import log_group
from .roles import grant_own_logs, lambda_role
from .settings import StackSettings

# The interface with gateway/processor/lambda_handler.py: change them here if it changes.
PROCESSOR_HANDLER = "gateway.processor.lambda_handler.handler"
# The function's iot-data endpoint (an https:// URL); the processor's --iot-data-url option.
PROCESSOR_ENDPOINT_ENV = "PROCESSOR_IOT_DATA_URL"
PROCESSOR_HEARTBEAT_ENV = "PROCESSOR_HEARTBEAT_INTERVAL"
# The rule's output is the event: the CP id and its frame's exact bytes (base64, as a Lambda
# action takes only JSON).  Equal to gateway.processor.lambda_event.RULE_SQL.
PROCESSOR_RULE_SQL = "SELECT topic(1) AS chargePointId, encode(*, 'base64') AS frame FROM '+/in'"
PROCESSOR_RUNTIME = lambda_.Runtime.PYTHON_3_11
PROCESSOR_TIMEOUT_S = 30
PROCESSOR_MEMORY_MB = 256


@dataclass(frozen=True)
class Processor:
    function: lambda_.Function
    rule: iot.CfnTopicRule


def build_processor(
    scope: Construct,
    settings: StackSettings,
    *,
    repo_root: Path,
    data_endpoint: str,
    errors_action: iot.CfnTopicRule.ActionProperty,
) -> Processor:
    arm = settings.architecture == "arm64"
    function = lambda_.Function(
        scope,
        "Processor",
        description="OCPP message processor: answers the CALLs charge points send on <cp-id>/in",
        runtime=PROCESSOR_RUNTIME,
        architecture=lambda_.Architecture.ARM_64 if arm else lambda_.Architecture.X86_64,
        handler=PROCESSOR_HANDLER,
        code=processor_code(repo_root, arm64=arm),
        environment={
            PROCESSOR_ENDPOINT_ENV: f"https://{data_endpoint}",
            PROCESSOR_HEARTBEAT_ENV: str(settings.heartbeat_interval),
        },
        timeout=Duration.seconds(PROCESSOR_TIMEOUT_S),
        memory_size=PROCESSOR_MEMORY_MB,
        log_group=log_group(scope, "ProcessorLogs", settings),
        role=lambda_role(scope, "ProcessorRole"),
    )
    grant_own_logs(function)
    function.add_to_role_policy(
        iam.PolicyStatement(actions=["iot:Publish"], resources=[iot_arn("topic/*/out")])
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iot:GetThingShadow", "iot:UpdateThingShadow"],
            resources=[iot_arn("thing/*")],
        )
    )
    rule = iot.CfnTopicRule(
        scope,
        "ProcessorRule",
        topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
            sql=PROCESSOR_RULE_SQL,
            aws_iot_sql_version=IOT_SQL_VERSION,
            rule_disabled=False,
            actions=[
                iot.CfnTopicRule.ActionProperty(
                    lambda_=iot.CfnTopicRule.LambdaActionProperty(
                        function_arn=function.function_arn
                    )
                )
            ],
            error_action=errors_action,
        ),
    )
    function.add_permission(
        "InvokedByProcessorRule",
        principal=iam.ServicePrincipal("iot.amazonaws.com"),
        source_arn=rule.attr_arn,
        source_account=Aws.ACCOUNT_ID,
    )
    return Processor(function=function, rule=rule)
