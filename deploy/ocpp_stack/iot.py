"""AWS IoT Core: the gateway's policy and certificate, the data endpoint, registry events, the
heartbeat rule and its DynamoDB table.

The certificate is made by a small Lambda function behind a custom resource
(``deploy/functions/iot_certificate``): it calls ``CreateKeysAndCertificate`` and writes the
certificate and its private key into a Secrets Manager secret.  The key exists only in AWS
IoT's answer to that call and in the secret: never in the template, the custom resource's
answer or the stack's outputs.  Deleting the stack deactivates and deletes the certificate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, CustomResource, Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_iot as iot
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from iotshared.iot_policy import HEARTBEAT_SQL, gateway_policy

from .log_groups import log_group
from .roles import grant_own_logs, lambda_role
from .settings import StackSettings

HEARTBEAT_TABLE = "chargePointHeartbeat"
IOT_SQL_VERSION = "2016-03-23"
CERTIFICATE_FUNCTION_DIR = Path(__file__).resolve().parent.parent / "functions" / "iot_certificate"


@dataclass(frozen=True)
class IotResources:
    data_endpoint: str  # the account's iot:Data-ATS host name
    identity_secret: secretsmanager.Secret
    certificate: CustomResource
    policy: iot.CfnPolicy
    heartbeat_table: dynamodb.Table
    heartbeat_rule: iot.CfnTopicRule
    rule_errors_action: iot.CfnTopicRule.ActionProperty


def iot_arn(resource: str) -> str:
    """An AWS IoT ARN in this stack's partition, region and account."""
    return f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource}"


def build_iot(scope: Construct, settings: StackSettings) -> IotResources:
    secret = secretsmanager.Secret(
        scope,
        "GatewayIdentity",
        description=(
            "The OCPP gateway's AWS IoT certificate and private key (JSON: certificatePem, "
            "privateKey), written by the stack's certificate function"
        ),
        removal_policy=RemovalPolicy.DESTROY,
    )
    certificate = _certificate(scope, settings, secret)
    policy = iot.CfnPolicy(
        scope,
        "GatewayPolicy",
        policy_document=gateway_policy(Aws.PARTITION, Aws.REGION, Aws.ACCOUNT_ID),
    )
    iot.CfnPolicyPrincipalAttachment(
        scope,
        "GatewayPolicyAttachment",
        policy_name=policy.ref,
        principal=certificate.get_att_string("CertificateArn"),
    )
    endpoint = _sdk_call(
        scope,
        settings,
        "IotDataEndpoint",
        cr.AwsSdkCall(
            service="Iot",
            action="describeEndpoint",
            parameters={"endpointType": "iot:Data-ATS"},
            physical_resource_id=cr.PhysicalResourceId.of("iot-data-ats-endpoint"),
            output_paths=["endpointAddress"],
        ),
    )
    # Registry events (gateway/revocation.py): a deleted Thing or a changed password closes the
    # live CP at once.  An account setting: left on when the stack is deleted.
    _sdk_call(
        scope,
        settings,
        "RegistryEvents",
        cr.AwsSdkCall(
            service="Iot",
            action="updateEventConfigurations",
            parameters={"eventConfigurations": {"THING": {"Enabled": True}}},
            physical_resource_id=cr.PhysicalResourceId.of("iot-thing-events"),
        ),
    )

    table = dynamodb.Table(
        scope,
        "HeartbeatTable",
        table_name=HEARTBEAT_TABLE,
        partition_key=dynamodb.Attribute(name="chargePointId", type=dynamodb.AttributeType.STRING),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        removal_policy=RemovalPolicy.DESTROY,
    )
    rule_role = iam.Role(
        scope,
        "HeartbeatRuleRole",
        assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
        description="AWS IoT heartbeat rule: write the charge point's last heartbeat",
    )
    rule_role.add_to_policy(
        iam.PolicyStatement(actions=["dynamodb:PutItem"], resources=[table.table_arn])
    )
    errors = _rule_errors_action(scope, settings)
    rule = iot.CfnTopicRule(
        scope,
        "HeartbeatRule",
        topic_rule_payload=iot.CfnTopicRule.TopicRulePayloadProperty(
            sql=HEARTBEAT_SQL,
            aws_iot_sql_version=IOT_SQL_VERSION,
            rule_disabled=False,
            actions=[
                iot.CfnTopicRule.ActionProperty(
                    dynamo_d_bv2=iot.CfnTopicRule.DynamoDBv2ActionProperty(
                        role_arn=rule_role.role_arn,
                        put_item=iot.CfnTopicRule.PutItemInputProperty(table_name=table.table_name),
                    )
                )
            ],
            error_action=errors,
        ),
    )
    return IotResources(
        data_endpoint=endpoint.get_response_field("endpointAddress"),
        identity_secret=secret,
        certificate=certificate,
        policy=policy,
        heartbeat_table=table,
        heartbeat_rule=rule,
        rule_errors_action=errors,
    )


def _certificate(
    scope: Construct, settings: StackSettings, secret: secretsmanager.Secret
) -> CustomResource:
    function = lambda_.Function(
        scope,
        "CertificateFunction",
        description="Creates the gateway's AWS IoT certificate; its key goes only into the secret",
        runtime=lambda_.Runtime.PYTHON_3_14,
        architecture=lambda_.Architecture.ARM_64,
        handler="index.on_event",
        code=lambda_.Code.from_asset(str(CERTIFICATE_FUNCTION_DIR)),
        timeout=Duration.minutes(1),
        log_group=log_group(scope, "CertificateFunctionLogs", settings),
        role=lambda_role(scope, "CertificateFunctionRole"),
    )
    function.add_to_role_policy(
        iam.PolicyStatement(actions=["iot:CreateKeysAndCertificate"], resources=["*"])
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iot:DescribeCertificate", "iot:UpdateCertificate", "iot:DeleteCertificate"],
            resources=[iot_arn("cert/*")],
        )
    )
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["secretsmanager:PutSecretValue"], resources=[secret.secret_arn]
        )
    )
    grant_own_logs(function)
    provider = cr.Provider(
        scope,
        "CertificateProvider",
        on_event_handler=function,
        log_group=log_group(scope, "CertificateProviderLogs", settings),
    )
    return CustomResource(
        scope,
        "GatewayCertificate",
        service_token=provider.service_token,
        resource_type="Custom::IotCertificate",
        properties={"SecretArn": secret.secret_arn},
    )


def _sdk_call(
    scope: Construct, settings: StackSettings, construct_id: str, call: cr.AwsSdkCall
) -> cr.AwsCustomResource:
    return cr.AwsCustomResource(
        scope,
        construct_id,
        on_create=call,
        on_update=call,
        # Neither call supports resource-level permissions.
        policy=cr.AwsCustomResourcePolicy.from_sdk_calls(
            resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE
        ),
        install_latest_aws_sdk=False,
        log_group=log_group(scope, f"{construct_id}Logs", settings),
    )


def _rule_errors_action(
    scope: Construct, settings: StackSettings
) -> iot.CfnTopicRule.ActionProperty:
    """The rules' error action: what a rule failed to do (a throttled write, a failed
    invocation) goes to a log group instead of vanishing."""
    errors = log_group(scope, "RuleErrors", settings)
    role = iam.Role(
        scope,
        "RuleErrorsRole",
        assumed_by=iam.ServicePrincipal("iot.amazonaws.com"),
        description="AWS IoT rules: log their errors",
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{errors.log_group_arn}:*"],
        )
    )
    return iot.CfnTopicRule.ActionProperty(
        cloudwatch_logs=iot.CfnTopicRule.CloudwatchLogsActionProperty(
            log_group_name=errors.log_group_name, role_arn=role.role_arn
        )
    )
