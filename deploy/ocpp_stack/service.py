"""The gateway on Fargate: network, cluster, task, service, Network Load Balancer, autoscaling.

The container is the repository's Dockerfile.  Its configuration is ``GATEWAY_*`` environment
variables (gateway/config_options.py); the gateway reads its certificate and key from files, so
the container's command writes the two container secrets (from Secrets Manager, never in the
template) to files of mode 0600 under /tmp and then runs ``python -m gateway`` in their place.

Scaling: scaling.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, Duration, IgnoreMode
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from .log_groups import log_group
from .scaling import build_autoscaling
from .settings import StackSettings

CONTAINER_NAME = "gateway"
GATEWAY_PORT = 8080
# /metrics, /healthz, /readyz (docs/operations.md): the load balancer's health check asks /readyz.
METRICS_PORT = 9100
PLAIN_LISTENER_PORT = 8080
TLS_LISTENER_PORT = 443
# Where the container's command writes the secrets; GATEWAY_CERT_FILE / GATEWAY_KEY_FILE name them.
IDENTITY_DIR = "/tmp/gateway-identity"
CERT_FILE = f"{IDENTITY_DIR}/certificate.pem"
KEY_FILE = f"{IDENTITY_DIR}/private.key"
# The two container secrets (JSON keys of the identity secret, written by the certificate function).
CERT_SECRET_VAR, KEY_SECRET_VAR = "IOT_CERTIFICATE_PEM", "IOT_PRIVATE_KEY_PEM"
CERT_SECRET_KEY, KEY_SECRET_KEY = "certificatePem", "privateKey"
# The container's command: the secrets to files only this user reads, then the gateway in its place
# (so that it is PID 1 and gets ECS's SIGTERM: 1001 to every CP, a clean MQTT disconnect).
START_COMMAND = (
    "set -eu; umask 077; "
    f"mkdir -p {IDENTITY_DIR}; "
    f"printf '%s\\n' \"${CERT_SECRET_VAR}\" > {CERT_FILE}; "
    f"printf '%s\\n' \"${KEY_SECRET_VAR}\" > {KEY_FILE}; "
    f"unset {CERT_SECRET_VAR} {KEY_SECRET_VAR}; "
    "exec python -m gateway"
)
# The Dockerfile copies only these; everything else stays out of the image asset (and its hash).
IMAGE_CONTEXT = ("Dockerfile", "setup.cfg", "pyproject.toml", "README.md", "gateway", "iotshared")


@dataclass(frozen=True)
class GatewayService:
    """What the rest of the stack refers to."""

    vpc: ec2.Vpc
    service: ecs.FargateService
    task_definition: ecs.FargateTaskDefinition
    load_balancer: elbv2.NetworkLoadBalancer
    target_group: elbv2.NetworkTargetGroup
    scalable_target: appscaling.ScalableTarget
    connections_policy: appscaling.CfnScalingPolicy
    websocket_url: str


def image_excludes() -> list[str]:
    """Docker ignore patterns keeping only :data:`IMAGE_CONTEXT` (and no bytecode)."""
    return ["*", *(f"!{name}" for name in IMAGE_CONTEXT), "**/__pycache__", "**/*.pyc"]


def build_gateway_service(
    scope: Construct,
    settings: StackSettings,
    *,
    repo_root: Path,
    iot_endpoint: str,
    identity_secret: secretsmanager.ISecret,
) -> GatewayService:
    s = settings
    network_logs = log_group(scope, "VpcFlowLogs", s)
    if s.nat_gateways > 0:
        subnets = [
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
            ec2.SubnetConfiguration(name="tasks", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        ]
    else:  # no NAT gateway: tasks in the public subnets with a public IP (cheaper, see the docs)
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC)]
    vpc = ec2.Vpc(
        scope,
        "Vpc",
        max_azs=2,
        nat_gateways=s.nat_gateways,
        subnet_configuration=subnets,
        flow_logs={
            "rejected": ec2.FlowLogOptions(
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(network_logs),
                traffic_type=ec2.FlowLogTrafficType.REJECT,
            )
        },
    )
    cluster = ecs.Cluster(
        scope,
        "Cluster",
        vpc=vpc,
        container_insights_v2=(
            ecs.ContainerInsights.ENABLED
            if s.container_insights
            else ecs.ContainerInsights.DISABLED
        ),
    )

    arm = s.architecture == "arm64"
    task = ecs.FargateTaskDefinition(
        scope,
        "Task",
        cpu=s.cpu,
        memory_limit_mib=s.memory,
        runtime_platform=ecs.RuntimePlatform(
            cpu_architecture=ecs.CpuArchitecture.ARM64 if arm else ecs.CpuArchitecture.X86_64,
            operating_system_family=ecs.OperatingSystemFamily.LINUX,
        ),
    )
    # The registry check (gateway/registry.py) is the gateway's only AWS API call.
    task.add_to_task_role_policy(
        iam.PolicyStatement(
            actions=["iot:DescribeThing"],
            resources=[f"arn:{Aws.PARTITION}:iot:{Aws.REGION}:{Aws.ACCOUNT_ID}:thing/*"],
        )
    )
    gateway_logs = log_group(scope, "GatewayLogs", s)
    environment = {
        "GATEWAY_HOST": "0.0.0.0",
        "GATEWAY_PORT": str(GATEWAY_PORT),
        "GATEWAY_REQUIRE_BROKER": "1",
        "GATEWAY_IOT_ENDPOINT": iot_endpoint,
        "GATEWAY_REGION": Aws.REGION,
        "GATEWAY_CERT_FILE": CERT_FILE,
        "GATEWAY_KEY_FILE": KEY_FILE,
        # On the task's address: the load balancer's health check reaches it (its security
        # group only), as would a Prometheus in the VPC; never the charge points.
        "GATEWAY_METRICS_PORT": str(METRICS_PORT),
        "GATEWAY_METRICS_HOST": "0.0.0.0",
    }
    if s.tls:
        # TLS ends at the load balancer: plain ws:// arrives here and counts as TLS (profile 2).
        environment["GATEWAY_TLS_TERMINATED_UPSTREAM"] = "1"
    container = task.add_container(
        CONTAINER_NAME,
        image=ecs.ContainerImage.from_asset(
            str(repo_root),
            platform=(ecr_assets.Platform.LINUX_ARM64 if arm else ecr_assets.Platform.LINUX_AMD64),
            exclude=image_excludes(),
            ignore_mode=IgnoreMode.DOCKER,
        ),
        command=["sh", "-c", START_COMMAND],
        environment=environment,
        secrets={
            CERT_SECRET_VAR: ecs.Secret.from_secrets_manager(identity_secret, CERT_SECRET_KEY),
            KEY_SECRET_VAR: ecs.Secret.from_secrets_manager(identity_secret, KEY_SECRET_KEY),
        },
        logging=ecs.LogDrivers.aws_logs(stream_prefix="gateway", log_group=gateway_logs),
        # The Dockerfile's HEALTHCHECK, which ECS does not read: GET /healthz (liveness); ECS
        # replaces a task that fails it.
        health_check=ecs.HealthCheck(
            command=["CMD", "python", "-m", "gateway.healthcheck"],
            interval=Duration.seconds(15),
            timeout=Duration.seconds(7),
            start_period=Duration.seconds(20),
            retries=3,
        ),
        port_mappings=[
            ecs.PortMapping(container_port=GATEWAY_PORT),
            ecs.PortMapping(container_port=METRICS_PORT),
        ],
        # Longer than the gateway's --drain-timeout (10 s): the CPs get their 1001 close.
        stop_timeout=Duration.seconds(30),
    )
    container.add_ulimits(
        ecs.Ulimit(name=ecs.UlimitName.NOFILE, soft_limit=s.nofile, hard_limit=s.nofile)
    )

    balancer_sg = ec2.SecurityGroup(
        scope,
        "LoadBalancerSecurityGroup",
        vpc=vpc,
        allow_all_outbound=False,
        description="OCPP charge points to the load balancer",
    )
    listen_port = TLS_LISTENER_PORT if s.tls else PLAIN_LISTENER_PORT
    balancer_sg.add_ingress_rule(
        ec2.Peer.any_ipv4(), ec2.Port.tcp(listen_port), "charge points (any address)"
    )
    task_sg = ec2.SecurityGroup(
        scope,
        "GatewaySecurityGroup",
        vpc=vpc,
        allow_all_outbound=True,  # AWS IoT Core, ECR, Secrets Manager, CloudWatch Logs
        description="OCPP gateway tasks: only the load balancer reaches them",
    )
    task_sg.add_ingress_rule(balancer_sg, ec2.Port.tcp(GATEWAY_PORT), "from the load balancer")
    balancer_sg.add_egress_rule(task_sg, ec2.Port.tcp(GATEWAY_PORT), "to the gateway tasks")
    task_sg.add_ingress_rule(
        balancer_sg, ec2.Port.tcp(METRICS_PORT), "the load balancer's health check (/readyz)"
    )
    balancer_sg.add_egress_rule(
        task_sg, ec2.Port.tcp(METRICS_PORT), "health checks of the gateway tasks"
    )

    service = ecs.FargateService(
        scope,
        "Service",
        cluster=cluster,
        task_definition=task,
        # No desired count: autoscaling owns it (a deploy must not reset a scaled-out service to
        # its minimum); the scalable target's minimum raises a new service to minTasks.
        min_healthy_percent=100,
        max_healthy_percent=200,
        assign_public_ip=s.nat_gateways == 0,
        vpc_subnets=ec2.SubnetSelection(
            subnet_type=(
                ec2.SubnetType.PRIVATE_WITH_EGRESS if s.nat_gateways else ec2.SubnetType.PUBLIC
            )
        ),
        security_groups=[task_sg],
        circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
        health_check_grace_period=Duration.seconds(60),
    )

    balancer = elbv2.NetworkLoadBalancer(
        scope,
        "LoadBalancer",
        vpc=vpc,
        internet_facing=True,
        security_groups=[balancer_sg],
        cross_zone_enabled=True,
    )
    if s.tls:
        assert s.domain is not None and s.hosted_zone_id is not None and s.zone_name is not None
        zone = route53.HostedZone.from_hosted_zone_attributes(
            scope, "Zone", hosted_zone_id=s.hosted_zone_id, zone_name=s.zone_name
        )
        certificate = acm.Certificate(
            scope,
            "Certificate",
            domain_name=s.domain,
            validation=acm.CertificateValidation.from_dns(zone),
        )
        listener = balancer.add_listener(
            "Wss",
            port=TLS_LISTENER_PORT,
            protocol=elbv2.Protocol.TLS,
            certificates=[elbv2.ListenerCertificate.from_certificate_manager(certificate)],
            # TLS 1.2 and 1.3 only (OCPP security profile 2 asks for TLS 1.2 or later).
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
        )
        route53.ARecord(
            scope,
            "Alias",
            zone=zone,
            record_name=s.domain,
            target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(balancer)),
        )
        websocket_url = f"wss://{s.domain}"
    else:
        listener = balancer.add_listener(
            "Ws", port=PLAIN_LISTENER_PORT, protocol=elbv2.Protocol.TCP
        )
        websocket_url = f"ws://{balancer.load_balancer_dns_name}:{PLAIN_LISTENER_PORT}"
    target_group = listener.add_targets(
        "Gateway",
        port=GATEWAY_PORT,
        protocol=elbv2.Protocol.TCP,
        targets=[
            service.load_balancer_target(container_name=CONTAINER_NAME, container_port=GATEWAY_PORT)
        ],
        # Readiness: /readyz turns 503 at once when the task drains (SIGTERM) or loses the
        # broker or the registry, so no new charge point is sent to it; liveness is the
        # container's own check (above).
        health_check=elbv2.HealthCheck(
            protocol=elbv2.Protocol.HTTP,
            port=str(METRICS_PORT),
            path="/readyz",
            healthy_http_codes="200",
            interval=Duration.seconds(10),
            healthy_threshold_count=2,
            unhealthy_threshold_count=2,
        ),
        # ECS deregisters a stopping task, waits this long, then sends SIGTERM (1001 to its CPs).
        deregistration_delay=Duration.seconds(30),
    )

    scalable_target, connections_policy = build_autoscaling(
        scope, s, cluster, service, balancer, target_group
    )
    return GatewayService(
        vpc=vpc,
        service=service,
        task_definition=task,
        load_balancer=balancer,
        target_group=target_group,
        scalable_target=scalable_target,
        connections_policy=connections_policy,
        websocket_url=websocket_url,
    )
