"""The AWS deployment (deploy/, docs/deploying-aws.md), offline: no AWS account is reachable.

The CDK app is synthesized twice (plain ws:// on 8080, and TLS on 443 with a domain and other
context values) and the templates are pinned with ``aws_cdk.assertions``: listeners, scaling
policies, IAM statements, rule SQL, the processor's environment and permissions, and that no
secret material is in them.  cdk-nag's AwsSolutions checks and cfn-lint must find nothing.
The context values and the certificate function run without the CDK (the function against moto).

The synthesis needs Node.js and aws-cdk-lib: skipped without them, unless REQUIRE_NODE=1
(CI sets it), where their absence fails.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from iotshared.iot_policy import HEARTBEAT_SQL, gateway_policy

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
sys.path.append(str(DEPLOY))  # after everything else: deploy/app.py must not shadow an `app`

from ocpp_stack.settings import (  # noqa: E402
    LOG_RETENTION_DAYS,
    SettingsError,
    StackSettings,
    settings_from_mapping,
)


def _cdk_missing() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed (apt-get install nodejs): the CDK runs on it"
    if importlib.util.find_spec("aws_cdk") is None or importlib.util.find_spec("cdk_nag") is None:
        return "aws-cdk-lib / cdk-nag are not installed (pip install -e '.[test]')"
    return None


CDK_MISSING = _cdk_missing()
if CDK_MISSING and os.environ.get("REQUIRE_NODE") == "1":
    raise RuntimeError(f"REQUIRE_NODE=1 but {CDK_MISSING}")
needs_cdk = pytest.mark.skipif(CDK_MISSING is not None, reason=CDK_MISSING or "")

# Skip asset bundling (pip into the processor's asset): the template does not depend on it.
NO_BUNDLING = {"aws:cdk:bundling-stacks": []}
TLS_CONTEXT = {
    "domain": "ocpp.example.com",
    "hostedZoneId": "Z0123456789ABCDEFGHIJ",
    "architecture": "x86_64",
    "cpu": "1024",
    "memory": "2048",
    "minTasks": "2",
    "maxTasks": "10",
    "cpuTarget": "50",
    "connectionsTarget": "3000",
    "logRetentionDays": "90",
    "containerInsights": "true",
}
# PEM text, a key as a JSON value, a secret's value given in the template.
SECRET_MARKERS = (
    "-----BEGIN",
    "PRIVATE KEY",
    "BEGIN CERTIFICATE",
    'privateKey":',
    '"SecretString"',
)


# --- context values (no CDK) --------------------------------------------------------------


def test_settings_defaults_and_context_values() -> None:
    assert settings_from_mapping({}) == StackSettings()
    s = settings_from_mapping(TLS_CONTEXT)
    assert (s.domain, s.zone_name, s.tls) == ("ocpp.example.com", "example.com", True)
    assert (s.cpu, s.memory, s.min_tasks, s.max_tasks) == (1024, 2048, 2, 10)
    assert (s.cpu_target, s.connections_target, s.architecture) == (50, 3000, "x86_64")
    assert settings_from_mapping({"containerInsights": "true"}).container_insights is True
    assert not StackSettings().tls


@pytest.mark.parametrize(
    ("context", "named"),
    [
        ({"domain": "ocpp.example.com"}, "hostedZoneId"),
        ({"domain": "not a domain", "hostedZoneId": "Z1"}, "context domain"),
        (
            {"domain": "ocpp.example.com", "hostedZoneId": "Z1", "hostedZoneName": "other.org"},
            "hostedZoneName",
        ),
        ({"hostedZoneId": "Z1"}, "without domain"),
        ({"architecture": "sparc"}, "context architecture"),
        ({"cpu": "300"}, "context cpu"),
        ({"cpu": "256", "memory": "4096"}, "context memory"),
        ({"minTasks": "3", "maxTasks": "2"}, "minTasks/maxTasks"),
        ({"minTasks": "two"}, "context minTasks: expected a whole number"),
        ({"cpuTarget": "95"}, "context cpuTarget"),
        ({"connectionsTarget": "0"}, "context connectionsTarget"),
        ({"logRetentionDays": "10"}, "context logRetentionDays"),
        ({"containerInsights": "maybe"}, "context containerInsights"),
        ({"natGateways": "4"}, "context natGateways"),
        ({"heartbeatInterval": "5"}, "context heartbeatInterval"),
        ({"colour": "blue"}, "unknown context colour"),
    ],
)
def test_settings_refuse_bad_context_naming_the_key(context: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_from_mapping(context)


def test_provision_script_grants_the_same_policy() -> None:
    """scripts/provision.py and the stack create the policy from one builder; the script's
    resources match any region and account, as they always have."""
    spec = importlib.util.spec_from_file_location("provision", ROOT / "scripts" / "provision.py")
    assert spec is not None and spec.loader is not None
    provision = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(provision)
    assert provision.gateway_policy is gateway_policy
    assert provision.HEARTBEAT_SQL == HEARTBEAT_SQL
    document = gateway_policy()
    resources = [r for st in document["Statement"] for r in
                 (st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]])]  # fmt: skip
    assert resources and all(r.startswith("arn:aws:iot:*:*:") for r in resources)
    assert "arn:aws:iot:*:*:topic/${iot:ClientId}/in" in resources


# --- the certificate function, against moto -----------------------------------------------


def _certificate_function() -> ModuleType:
    path = DEPLOY / "functions" / "iot_certificate" / "index.py"
    spec = importlib.util.spec_from_file_location("iot_certificate_function", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def aws_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client("iot"), boto3.client("secretsmanager")


def test_certificate_function_keeps_the_key_in_the_secret_only(
    aws_clients: tuple[Any, Any],
) -> None:
    iot, secrets = aws_clients
    function = _certificate_function()
    secret_arn = secrets.create_secret(Name="gw", SecretString="placeholder")["ARN"]
    event = {"RequestType": "Create", "ResourceProperties": {"SecretArn": secret_arn}}

    created = function.on_event(event, None, iot=iot, secrets=secrets)
    cert_id = created["PhysicalResourceId"]
    assert set(created["Data"]) == {"CertificateId", "CertificateArn"}
    assert "PRIVATE KEY" not in json.dumps(created)
    stored = json.loads(secrets.get_secret_value(SecretId=secret_arn)["SecretString"])
    assert "BEGIN RSA PRIVATE KEY" in stored["privateKey"] or "PRIVATE KEY" in stored["privateKey"]
    description = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert description["status"] == "ACTIVE"
    assert stored["certificatePem"] == description["certificatePem"]
    assert created["Data"]["CertificateArn"] == description["certificateArn"]

    update = {**event, "RequestType": "Update", "PhysicalResourceId": cert_id,
              "OldResourceProperties": {"SecretArn": secret_arn}}  # fmt: skip
    assert function.on_event(update, None, iot=iot, secrets=secrets) == created
    moved = {**update, "OldResourceProperties": {"SecretArn": "arn:other"}}
    with pytest.raises(ValueError, match="new certificate"):
        function.on_event(moved, None, iot=iot, secrets=secrets)

    delete = {**event, "RequestType": "Delete", "PhysicalResourceId": cert_id}
    assert function.on_event(delete, None, iot=iot, secrets=secrets) == {
        "PhysicalResourceId": cert_id
    }
    assert iot.list_certificates()["certificates"] == []
    # Deleting again (a retried delete) and deleting after a failed create are no errors.
    function.on_event(delete, None, iot=iot, secrets=secrets)
    failed = {**delete, "PhysicalResourceId": "2026/12/03/[$LATEST]abc"}
    assert (
        function.on_event(failed, None, iot=iot, secrets=secrets)["PhysicalResourceId"]
        == failed["PhysicalResourceId"]
    )


def test_certificate_function_deletes_the_certificate_when_the_secret_cannot_be_written(
    aws_clients: tuple[Any, Any],
) -> None:
    iot, secrets = aws_clients
    function = _certificate_function()
    missing = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:gone-AbCdEf"
    event = {"RequestType": "Create", "ResourceProperties": {"SecretArn": missing}}
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        function.on_event(event, None, iot=iot, secrets=secrets)
    assert iot.list_certificates()["certificates"] == []


# --- the synthesized templates ------------------------------------------------------------


class Synth:
    def __init__(self, context: dict[str, Any], outdir: Path) -> None:
        from aws_cdk.assertions import Template
        from ocpp_stack.stack import build_app

        self.outdir = outdir
        self.app, self.stack = build_app({**NO_BUNDLING, **context}, outdir=str(outdir))
        # cdk-nag runs here: a finding that is not acknowledged stops the synthesis.
        self.app.synth()
        self.template = Template.from_stack(self.stack)
        self.json: dict[str, Any] = self.template.to_json()

    def resources(self, kind: str) -> dict[str, Any]:
        return {k: v for k, v in self.json["Resources"].items() if v["Type"] == kind}

    def one(self, kind: str) -> dict[str, Any]:
        found = list(self.resources(kind).values())
        assert len(found) == 1, f"{len(found)} {kind}"
        return dict(found[0]["Properties"])

    def logical_id(self, construct: Any) -> str:
        return str(self.stack.get_logical_id(construct.node.default_child or construct))

    def resolve(self, value: Any) -> Any:
        return self.stack.resolve(value)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    if CDK_MISSING:
        pytest.skip(CDK_MISSING)
    return Synth({}, tmp_path_factory.mktemp("cdk-plain"))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    if CDK_MISSING:
        pytest.skip(CDK_MISSING)
    return Synth(TLS_CONTEXT, tmp_path_factory.mktemp("cdk-tls"))


def _environment(task: dict[str, Any]) -> dict[str, Any]:
    (container,) = task["ContainerDefinitions"]
    return {e["Name"]: e["Value"] for e in container["Environment"]}


@needs_cdk
def test_plain_listener_is_tcp_8080_to_the_gateway(plain: Synth) -> None:
    listener = plain.one("AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Port"], listener["Protocol"]) == (8080, "TCP")
    group = plain.one("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (group["Port"], group["Protocol"], group["TargetType"]) == (8080, "TCP", "ip")
    # The health check is the gateway's readiness, on its metrics port (reached by the balancer).
    assert (group["HealthCheckProtocol"], group["HealthCheckPort"]) == ("HTTP", "9100")
    assert (group["HealthCheckPath"], group["Matcher"]) == ("/readyz", {"HttpCode": "200"})
    assert plain.resources("AWS::CertificateManager::Certificate") == {}
    assert plain.resources("AWS::Route53::RecordSet") == {}
    env = _environment(plain.one("AWS::ECS::TaskDefinition"))
    assert "GATEWAY_TLS_TERMINATED_UPSTREAM" not in env
    url = plain.json["Outputs"]["websocketURL"]["Value"]
    joined = url["Fn::Join"][1]
    assert joined[0] == "ws://" and joined[-1] == ":8080"
    assert joined[1]["Fn::GetAtt"][1] == "DNSName"
    # Only port 8080 is open to the world, on the load balancer; the tasks only to it.
    ingress = [
        rule
        for sg in plain.resources("AWS::EC2::SecurityGroup").values()
        for rule in sg["Properties"].get("SecurityGroupIngress", [])
    ]
    assert [(r["CidrIp"], r["FromPort"], r["ToPort"]) for r in ingress] == [
        ("0.0.0.0/0", 8080, 8080)
    ]
    # The tasks: 8080 and the metrics port 9100, from the load balancer's group only.
    task_ingress = plain.resources("AWS::EC2::SecurityGroupIngress").values()
    assert sorted(r["Properties"]["FromPort"] for r in task_ingress) == [8080, 9100]
    assert all("SourceSecurityGroupId" in r["Properties"] for r in task_ingress)


@needs_cdk
def test_tls_listener_is_443_with_a_certificate_and_an_alias(tls: Synth) -> None:
    listener = tls.one("AWS::ElasticLoadBalancingV2::Listener")
    assert (listener["Port"], listener["Protocol"]) == (443, "TLS")
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13-1-2")
    certificate = tls.one("AWS::CertificateManager::Certificate")
    assert certificate["DomainName"] == "ocpp.example.com"
    assert certificate["ValidationMethod"] == "DNS"
    assert listener["Certificates"] == [
        {"CertificateArn": {"Ref": tls.logical_id(tls.stack.node.find_child("Certificate"))}}
    ]
    record = tls.one("AWS::Route53::RecordSet")
    assert (record["Name"], record["Type"], record["HostedZoneId"]) == (
        "ocpp.example.com.",
        "A",
        "Z0123456789ABCDEFGHIJ",
    )
    group = tls.one("AWS::ElasticLoadBalancingV2::TargetGroup")
    assert (group["Port"], group["Protocol"]) == (8080, "TCP")  # TLS ends at the balancer
    env = _environment(tls.one("AWS::ECS::TaskDefinition"))
    assert env["GATEWAY_TLS_TERMINATED_UPSTREAM"] == "1"
    assert tls.json["Outputs"]["websocketURL"]["Value"] == "wss://ocpp.example.com"
    ingress = [
        (rule["CidrIp"], rule["FromPort"])
        for sg in tls.resources("AWS::EC2::SecurityGroup").values()
        for rule in sg["Properties"].get("SecurityGroupIngress", [])
    ]
    assert ingress == [("0.0.0.0/0", 443)]


@needs_cdk
def test_gateway_task_configuration_and_secrets(plain: Synth, tls: Synth) -> None:
    task = plain.one("AWS::ECS::TaskDefinition")
    assert (task["Cpu"], task["Memory"]) == ("512", "1024")
    assert task["RuntimePlatform"]["CpuArchitecture"] == "ARM64"
    tls_task = tls.one("AWS::ECS::TaskDefinition")
    assert (tls_task["Cpu"], tls_task["Memory"]) == ("1024", "2048")
    assert tls_task["RuntimePlatform"]["CpuArchitecture"] == "X86_64"
    (container,) = task["ContainerDefinitions"]
    env = _environment(task)
    assert env["GATEWAY_HOST"] == "0.0.0.0" and env["GATEWAY_PORT"] == "8080"
    assert env["GATEWAY_REQUIRE_BROKER"] == "1"
    assert (env["GATEWAY_CERT_FILE"], env["GATEWAY_KEY_FILE"]) == (
        "/tmp/gateway-identity/certificate.pem",
        "/tmp/gateway-identity/private.key",
    )
    assert env["GATEWAY_IOT_ENDPOINT"]["Fn::GetAtt"][1] == "endpointAddress"
    assert env["GATEWAY_REGION"] == {"Ref": "AWS::Region"}
    # The gateway's options, as declared: every GATEWAY_ variable names a real option.
    from gateway.config_options import GatewayConfig
    from gateway.options import specs

    known = {spec.env for spec in specs(GatewayConfig, "GATEWAY_")}
    assert set(env) <= known, set(env) - known
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert set(secrets) == {"IOT_CERTIFICATE_PEM", "IOT_PRIVATE_KEY_PEM"}
    secret_ref = {"Ref": plain.logical_id(plain.stack.iot.identity_secret)}
    assert secrets["IOT_PRIVATE_KEY_PEM"] == {"Fn::Join": ["", [secret_ref, ":privateKey::"]]}
    assert secrets["IOT_CERTIFICATE_PEM"] == {"Fn::Join": ["", [secret_ref, ":certificatePem::"]]}
    command = container["Command"]
    assert command[:2] == ["sh", "-c"] and command[2].endswith("exec python -m gateway")
    assert (
        "umask 077" in command[2] and "unset IOT_CERTIFICATE_PEM IOT_PRIVATE_KEY_PEM" in command[2]
    )
    assert container["HealthCheck"]["Command"] == ["CMD", "python", "-m", "gateway.healthcheck"]
    env = _environment(task)
    assert (env["GATEWAY_METRICS_PORT"], env["GATEWAY_METRICS_HOST"]) == ("9100", "0.0.0.0")
    assert sorted(m["ContainerPort"] for m in container["PortMappings"]) == [8080, 9100]
    assert container["Ulimits"] == [{"Name": "nofile", "SoftLimit": 65536, "HardLimit": 65536}]
    assert container["LogConfiguration"]["LogDriver"] == "awslogs"
    # The task role may look up Things, nothing else.
    task_role = plain.logical_id(plain.stack.gateway.task_definition.task_role)
    assert _statements(plain, task_role) == [
        {"Action": "iot:DescribeThing", "Effect": "Allow",
         "Resource": plain.resolve(f"arn:{_aws('PARTITION')}:iot:{_aws('REGION')}:{_aws('ACCOUNT_ID')}:thing/*")}
    ]  # fmt: skip
    # The service starts only once the certificate function has written the secret.
    service = plain.json["Resources"][plain.logical_id(plain.stack.gateway.service)]
    assert plain.logical_id(plain.stack.iot.certificate) in service["DependsOn"]
    # Autoscaling owns the task count: a deploy must not reset it.
    assert "DesiredCount" not in service["Properties"]


@needs_cdk
def test_container_command_writes_the_secrets_to_private_files(
    plain: Synth, tmp_path: Path
) -> None:
    """The container's command, run by sh as ECS runs it, with the gateway replaced by a probe."""
    (container,) = plain.one("AWS::ECS::TaskDefinition")["ContainerDefinitions"]
    shell, flag, script = container["Command"]
    identity = tmp_path / "identity"
    script = script.replace("/tmp/gateway-identity", str(identity)).replace(
        "exec python -m gateway", 'echo "left in the environment: ${IOT_PRIVATE_KEY_PEM:-nothing}"'
    )
    cert, key = (
        "-----BEGIN CERTIFICATE-----\nMIIc\n-----END CERTIFICATE-----",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIk\n-----END RSA PRIVATE KEY-----",
    )
    done = subprocess.run(
        [shell, flag, script],
        env={"PATH": os.environ["PATH"], "IOT_CERTIFICATE_PEM": cert, "IOT_PRIVATE_KEY_PEM": key},
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    assert done.stdout == "left in the environment: nothing\n"
    assert (identity / "certificate.pem").read_text() == cert + "\n"
    assert (identity / "private.key").read_text() == key + "\n"
    assert (identity / "private.key").stat().st_mode & 0o777 == 0o600
    assert identity.stat().st_mode & 0o777 == 0o700


def _aws(name: str) -> str:
    from aws_cdk import Aws

    return str(getattr(Aws, name))


def _statements(synth: Synth, role_logical_id: str) -> list[dict[str, Any]]:
    """The statements of every IAM policy attached to ``role_logical_id`` (in template order)."""
    found = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in policy["Properties"]["Roles"]:
            found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


@needs_cdk
def test_scaling_on_cpu_and_on_connections_per_task(plain: Synth, tls: Synth) -> None:
    for synth, (low, high, cpu, connections) in (
        (plain, (1, 4, 60, 5000)),
        (tls, (2, 10, 50, 3000)),
    ):
        target = synth.one("AWS::ApplicationAutoScaling::ScalableTarget")
        assert (target["MinCapacity"], target["MaxCapacity"]) == (low, high)
        assert target["ScalableDimension"] == "ecs:service:DesiredCount"
        policies = {
            p["Properties"]["PolicyName"]: p["Properties"][
                "TargetTrackingScalingPolicyConfiguration"
            ]
            for p in synth.resources("AWS::ApplicationAutoScaling::ScalingPolicy").values()
        }
        assert len(policies) == 2
        (cpu_policy,) = (p for name, p in policies.items() if name != "ConnectionsPerTask")
        assert cpu_policy["PredefinedMetricSpecification"] == {
            "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
        }
        assert cpu_policy["TargetValue"] == cpu
        per_task = policies["ConnectionsPerTask"]
        assert per_task["TargetValue"] == connections
        assert (per_task["ScaleInCooldown"], per_task["ScaleOutCooldown"]) == (600, 60)
        queries = {q["Id"]: q for q in per_task["CustomizedMetricSpecification"]["Metrics"]}
        assert queries["perTask"] == {
            "Id": "perTask",
            "Expression": "flows / tasks",
            "Label": "Charge point connections per healthy task",
            "ReturnData": True,
        }
        flows = queries["flows"]["MetricStat"]
        tasks = queries["tasks"]["MetricStat"]
        assert (flows["Metric"]["Namespace"], flows["Metric"]["MetricName"]) == (
            "AWS/NetworkELB",
            "ActiveFlowCount",
        )
        assert (tasks["Metric"]["Namespace"], tasks["Metric"]["MetricName"]) == (
            "AWS/NetworkELB",
            "HealthyHostCount",
        )
        balancer = synth.logical_id(synth.stack.gateway.load_balancer)
        group = synth.logical_id(synth.stack.gateway.target_group)
        assert flows["Metric"]["Dimensions"] == [
            {"Name": "LoadBalancer", "Value": {"Fn::GetAtt": [balancer, "LoadBalancerFullName"]}}
        ]
        assert tasks["Metric"]["Dimensions"][1] == {
            "Name": "TargetGroup", "Value": {"Fn::GetAtt": [group, "TargetGroupFullName"]}
        }  # fmt: skip


@needs_cdk
def test_gateway_iot_policy_is_provisions_and_attached_to_the_certificate(plain: Synth) -> None:
    from aws_cdk import Aws

    policy = plain.one("AWS::IoT::Policy")
    assert policy["PolicyDocument"] == plain.resolve(
        gateway_policy(Aws.PARTITION, Aws.REGION, Aws.ACCOUNT_ID)
    )
    attachment = plain.one("AWS::IoT::PolicyPrincipalAttachment")
    assert attachment["PolicyName"] == {"Ref": plain.logical_id(plain.stack.iot.policy)}
    certificate = plain.logical_id(plain.stack.iot.certificate)
    assert attachment["Principal"] == {"Fn::GetAtt": [certificate, "CertificateArn"]}
    resource = plain.json["Resources"][certificate]
    assert resource["Type"] == "Custom::IotCertificate"
    assert set(resource["Properties"]) == {"ServiceToken", "SecretArn"}
    # The certificate function: make a certificate, manage only certificates, write only the secret.
    role = plain.logical_id(plain.stack.node.find_child("CertificateFunctionRole"))
    arn = f"arn:{_aws('PARTITION')}:iot:{_aws('REGION')}:{_aws('ACCOUNT_ID')}:cert/*"
    assert _statements(plain, role)[:3] == [
        {"Action": "iot:CreateKeysAndCertificate", "Effect": "Allow", "Resource": "*"},
        {"Action": ["iot:DescribeCertificate", "iot:UpdateCertificate", "iot:DeleteCertificate"],
         "Effect": "Allow", "Resource": plain.resolve(arn)},
        {"Action": "secretsmanager:PutSecretValue", "Effect": "Allow",
         "Resource": {"Ref": plain.logical_id(plain.stack.iot.identity_secret)}},
    ]  # fmt: skip
    assert [s["Action"] for s in _statements(plain, role)[3:]] == [
        ["logs:CreateLogStream", "logs:PutLogEvents"]
    ]


@needs_cdk
def test_heartbeat_rule_writes_the_table(plain: Synth) -> None:
    table = plain.one("AWS::DynamoDB::Table")
    assert table["TableName"] == "chargePointHeartbeat"
    assert table["KeySchema"] == [{"AttributeName": "chargePointId", "KeyType": "HASH"}]
    rules = {r["Properties"]["TopicRulePayload"]["Sql"]: r["Properties"]["TopicRulePayload"]
             for r in plain.resources("AWS::IoT::TopicRule").values()}  # fmt: skip
    heartbeat = rules[HEARTBEAT_SQL]
    (action,) = heartbeat["Actions"]
    table_id = plain.logical_id(plain.stack.iot.heartbeat_table)
    assert action["DynamoDBv2"]["PutItem"] == {"TableName": {"Ref": table_id}}
    role = action["DynamoDBv2"]["RoleArn"]["Fn::GetAtt"][0]
    assert _statements(plain, role) == [
        {
            "Action": "dynamodb:PutItem",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [table_id, "Arn"]},
        }
    ]
    assert heartbeat["AwsIotSqlVersion"] == "2016-03-23"
    assert "CloudwatchLogs" in heartbeat["ErrorAction"]
    assert plain.json["Outputs"]["heartbeatTableName"]["Value"] == {"Ref": table_id}


@needs_cdk
def test_processor_lambda_behind_the_rule_with_least_privilege(plain: Synth, tls: Synth) -> None:
    from ocpp_stack.processor import PROCESSOR_HANDLER, PROCESSOR_RULE_SQL

    function_id = plain.logical_id(plain.stack.processor.function)
    function = plain.json["Resources"][function_id]["Properties"]
    assert function["Handler"] == PROCESSOR_HANDLER == "gateway.processor.lambda_handler.handler"
    assert function["Runtime"] == "python3.11"
    assert function["Architectures"] == ["arm64"]
    tls_function = tls.json["Resources"][tls.logical_id(tls.stack.processor.function)]
    assert tls_function["Properties"]["Architectures"] == ["x86_64"]
    endpoint = function["Environment"]["Variables"]["PROCESSOR_IOT_DATA_URL"]
    assert endpoint["Fn::Join"][1][0] == "https://"
    assert endpoint["Fn::Join"][1][1]["Fn::GetAtt"][1] == "endpointAddress"
    assert function["Environment"]["Variables"]["PROCESSOR_HEARTBEAT_INTERVAL"] == "300"

    rule_id = plain.logical_id(plain.stack.processor.rule)
    payload = plain.json["Resources"][rule_id]["Properties"]["TopicRulePayload"]
    assert payload["Sql"] == PROCESSOR_RULE_SQL
    assert payload["Actions"] == [{"Lambda": {"FunctionArn": {"Fn::GetAtt": [function_id, "Arn"]}}}]
    (permission,) = (
        p["Properties"] for p in plain.resources("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    )  # fmt: skip
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["Principal"] == "iot.amazonaws.com"
    assert permission["SourceArn"] == {"Fn::GetAtt": [rule_id, "Arn"]}
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}

    role = function["Role"]["Fn::GetAtt"][0]
    arn = f"arn:{_aws('PARTITION')}:iot:{_aws('REGION')}:{_aws('ACCOUNT_ID')}:"
    logs = plain.logical_id(plain.stack.processor.function.log_group)
    assert _statements(plain, role) == [
        {"Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Effect": "Allow",
         "Resource": {"Fn::Join": ["", [{"Fn::GetAtt": [logs, "Arn"]}, ":*"]]}},
        {"Action": "iot:Publish", "Effect": "Allow", "Resource": plain.resolve(f"{arn}topic/*/out")},
        {"Action": ["iot:GetThingShadow", "iot:UpdateThingShadow"], "Effect": "Allow",
         "Resource": plain.resolve(f"{arn}thing/*")},
    ]  # fmt: skip
    # Nothing but its own statements: no managed policy on the role.
    assert "ManagedPolicyArns" not in plain.json["Resources"][role]["Properties"]


def test_processor_rule_sql_is_the_handlers() -> None:
    """The stack's rule SQL is what the Lambda handler parses (once that module is in the tree)."""
    if importlib.util.find_spec("gateway.processor.lambda_event") is None:
        pytest.skip("gateway/processor/lambda_event.py is not in this tree yet")
    from gateway.processor.lambda_event import RULE_SQL  # type: ignore[import-not-found]

    tree = ast.parse((DEPLOY / "ocpp_stack" / "processor.py").read_text())
    (stack_sql,) = (
        node.value.value for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and [getattr(t, "id", None) for t in node.targets] == ["PROCESSOR_RULE_SQL"]
    )  # fmt: skip
    assert stack_sql == RULE_SQL


@needs_cdk
def test_log_groups_have_retention_and_go_with_the_stack(plain: Synth, tls: Synth) -> None:
    for synth, days in ((plain, 30), (tls, 90)):
        groups = synth.resources("AWS::Logs::LogGroup")
        assert (
            len(groups) >= 5
        )  # flow logs, gateway, processor, certificate function, rule errors...
        for group in groups.values():
            assert group["Properties"]["RetentionInDays"] == days
            assert group["DeletionPolicy"] == "Delete"
    assert 30 in LOG_RETENTION_DAYS


@needs_cdk
def test_outputs(plain: Synth) -> None:
    outputs = plain.json["Outputs"]
    assert {"websocketURL", "iotDataEndpoint", "heartbeatTableName"} <= set(outputs)
    assert outputs["iotDataEndpoint"]["Value"]["Fn::GetAtt"][1] == "endpointAddress"
    (call,) = (
        r["Properties"]["Create"] for r in plain.resources("Custom::AWS").values()
        if "describeEndpoint" in json.dumps(r["Properties"]["Create"])
    )  # fmt: skip
    assert '"endpointType":"iot:Data-ATS"' in json.dumps(call).replace("\\", "").replace(" ", "")


@needs_cdk
def test_no_secret_material_in_the_templates(plain: Synth, tls: Synth) -> None:
    for synth in (plain, tls):
        text = json.dumps(synth.json)
        for marker in SECRET_MARKERS:
            assert marker not in text, marker
        secret = synth.one("AWS::SecretsManager::Secret")
        assert set(secret) <= {"Description", "GenerateSecretString", "Name"}
        assert "password" not in text.lower().replace("passwordlength", "")


@needs_cdk
def test_cdk_nag_aws_solutions_finds_nothing_unacknowledged(plain: Synth, tls: Synth) -> None:
    for synth in (plain, tls):
        report = json.loads((synth.outdir / "validation-report.json").read_text())
        (nag,) = report["pluginReports"]
        assert nag["pluginName"] == "AwsSolutions"
        assert (nag["conclusion"], nag["violations"]) == ("success", [])
        # Each accepted finding was acknowledged with its reason, on the construct it is about.
        for accepted in nag["suppressedViolations"]:
            assert len(accepted["reason"]) > 40, accepted["ruleName"]
        rules = {v["ruleName"] for v in nag["suppressedViolations"]}
        assert "AwsSolutions-L1" in rules and "AwsSolutions-EC23" in rules
    # Container Insights on (the TLS variant): nothing to acknowledge about it.
    plain_rules = {
        v["ruleName"]
        for v in json.loads((plain.outdir / "validation-report.json").read_text())["pluginReports"][
            0
        ]["suppressedViolations"]
    }
    tls_rules = {
        v["ruleName"]
        for v in json.loads((tls.outdir / "validation-report.json").read_text())["pluginReports"][
            0
        ]["suppressedViolations"]
    }
    assert "AwsSolutions-ECS4" in plain_rules - tls_rules


@needs_cdk
def test_cfn_lint_passes(plain: Synth, tls: Synth) -> None:
    from cfnlint.api import lint

    for synth in (plain, tls):
        matches = lint(json.dumps(synth.json), regions=["us-east-1", "eu-west-1"])
        # W3005 (a DependsOn already implied by a Ref/GetAtt): the CDK writes these itself, for
        # the order in which CloudFormation deletes a role and its policy.
        assert [str(m) for m in matches if m.rule.id != "W3005"] == []
