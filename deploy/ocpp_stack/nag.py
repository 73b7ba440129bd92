"""cdk-nag AwsSolutions findings this stack accepts, each with the reason.

cdk-nag 3 reports through CDK's policy validation: a finding that is not acknowledged here stops
the synthesis (``cdk synth``/``cdk deploy``, and the tests).  Each acknowledgment names one
finding (``AwsSolutions-IAM5[Resource::...]`` is one wildcard resource) on the construct that
has it, so that a new wildcard or a new resource is a new finding, not silently covered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

if TYPE_CHECKING:
    from .stack import GatewayStack

PREFIX = "AwsSolutions::AwsSolutions-"
IOT = "arn:<AWS::Partition>:iot:<AWS::Region>:<AWS::AccountId>:"
# The construct id CDK gives the one Lambda function behind every AwsCustomResource of a stack.
AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"

OWN_LOG_STREAMS = (
    "the log streams of its own log group (their names are made by Lambda / AWS IoT at run time)"
)
CDK_FRAMEWORK = (
    "a function the CDK makes for its custom-resource framework; its role and runtime are the "
    "CDK's, which keeps them current"
)


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    """Accept the AwsSolutions finding ``rule`` (e.g. ``IAM5[Resource::*]``) on ``construct``."""
    Validations.of(construct).acknowledge(Acknowledgment(id=PREFIX + rule, reason=reason))


def _arn_of(stack: Stack, construct: IConstruct) -> str:
    """How cdk-nag writes ``construct``'s ARN in a finding: ``<LogicalId.Arn>``."""
    child = construct.node.default_child
    assert child is not None
    return f"<{stack.get_logical_id(child)}.Arn>"  # type: ignore[arg-type]


def suppress_justified_findings(stack: GatewayStack) -> None:
    gateway, iot, processor = stack.gateway, stack.iot, stack.processor
    task = gateway.task_definition

    # The gateway's task.
    acknowledge(
        task,
        "ECS2",
        "the variables are the gateway's non-secret configuration (GATEWAY_*: endpoint, region, "
        "port, file paths); the certificate and key come from Secrets Manager as ECS secrets",
    )
    acknowledge(
        task.task_role,
        f"IAM5[Resource::{IOT}thing/*]",
        "the gateway checks any charge point's Thing (DescribeThing) on connection: CP ids are "
        "not known when the stack is deployed",
    )
    acknowledge(
        task.obtain_execution_role(),
        "IAM5[Resource::*]",
        "ecr:GetAuthorizationToken, which the CDK grants the execution role to pull the image, "
        "has no resource-level permissions",
    )
    if not stack.settings.container_insights:
        acknowledge(
            stack.node.find_child("Cluster"),
            "ECS4",
            "scaling and alarms use the free AWS/ECS and AWS/NetworkELB metrics; Container "
            "Insights adds charged per-task metrics: turn it on with -c containerInsights=true",
        )
    acknowledge(
        gateway.load_balancer.connections.security_groups[0],
        "EC23",
        "the load balancer is the charge points' endpoint: they connect from any address, on "
        "the listener port only; the tasks accept only the load balancer",
    )
    acknowledge(
        gateway.load_balancer,
        "ELB2",
        "NLB access logs record TLS listeners only; the gateway logs every connection (CP id, "
        "close code) to its log group",
    )

    # The certificate and its secret.
    acknowledge(
        iot.identity_secret,
        "SMG4",
        "the secret holds an AWS IoT certificate and its key, made by CreateKeysAndCertificate: "
        "Secrets Manager rotation cannot renew it; a new certificate is a redeploy that replaces "
        "the GatewayCertificate resource (docs/deploying-aws.md)",
    )
    certificate_function = stack.node.find_child("CertificateFunction")
    certificate_role = stack.node.find_child("CertificateFunctionRole")
    acknowledge(
        certificate_role,
        "IAM5[Resource::*]",
        "iot:CreateKeysAndCertificate has no resource-level permissions",
    )
    acknowledge(
        certificate_role,
        f"IAM5[Resource::{IOT}cert/*]",
        "the certificate's id is known only once CreateKeysAndCertificate has made it; the "
        "function deactivates and deletes the one it made",
    )
    acknowledge(
        certificate_role,
        f"IAM5[Resource::{_arn_of(stack, certificate_function.log_group)}:*]",  # type: ignore[attr-defined]
        OWN_LOG_STREAMS,
    )
    framework = stack.node.find_child("CertificateProvider").node.find_child("framework-onEvent")
    acknowledge(
        framework,
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        CDK_FRAMEWORK,
    )
    acknowledge(
        framework,
        f"IAM5[Resource::{_arn_of(stack, certificate_function)}:*]",
        "the CDK's provider framework may invoke any version of the certificate function",
    )

    # The AwsCustomResource calls (DescribeEndpoint, UpdateEventConfigurations).
    for name in ("IotDataEndpoint", "RegistryEvents"):
        acknowledge(
            stack.node.find_child(name),
            "IAM5[Resource::*]",
            "iot:DescribeEndpoint and iot:UpdateEventConfigurations have no resource-level "
            "permissions",
        )
    acknowledge(
        stack.node.find_child(AWS_CUSTOM_RESOURCE_SINGLETON),
        "IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
        CDK_FRAMEWORK,
    )

    # The rules.
    acknowledge(
        stack.node.find_child("RuleErrorsRole"),
        f"IAM5[Resource::{_arn_of(stack, stack.node.find_child('RuleErrors'))}:*]",
        OWN_LOG_STREAMS,
    )

    # The processor function.
    function = processor.function
    acknowledge(
        function,
        "L1",
        "the processor runs on Python 3.11, the version the project targets and tests "
        "(setup.cfg python_requires, the Dockerfile); its dependencies are bundled for it",
    )
    role = stack.node.find_child("ProcessorRole")
    acknowledge(
        role,
        f"IAM5[Resource::{IOT}topic/*/out]",
        "the processor answers any charge point on <cp-id>/out, and only there",
    )
    acknowledge(
        role,
        f"IAM5[Resource::{IOT}thing/*]",
        "the processor reads and writes the shadow of any charge point's Thing (BootNotification)",
    )
    acknowledge(role, f"IAM5[Resource::{_arn_of(stack, function.log_group)}:*]", OWN_LOG_STREAMS)
