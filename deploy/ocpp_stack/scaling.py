"""Autoscaling of the gateway's service: average CPU, and charge points connected per task.

Both are target tracking.  CPU: the tasks' average, the AWS sample's 60 %.  Connections: the
NLB publishes ``ActiveFlowCount`` per load balancer (and zone), never per target or target group,
and ``HealthyHostCount`` per target group; the balancer has one target group, so
``ActiveFlowCount / HealthyHostCount`` is the mean number of CP connections per serving task.
Application Auto Scaling scales out when either policy asks and in only when both agree.
docs/deploying-aws.md explains the defaults and what the mean does not see.
"""

from __future__ import annotations

from aws_cdk import Aws, Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from constructs import Construct

from .settings import StackSettings

# The ECS service-linked role Application Auto Scaling uses (what service.auto_scale_task_count uses).
ECS_SCALING_ROLE = (
    "arn:{partition}:iam::{account}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_ECSService"
)


def build_autoscaling(
    scope: Construct,
    s: StackSettings,
    cluster: ecs.Cluster,
    service: ecs.FargateService,
    balancer: elbv2.NetworkLoadBalancer,
    target_group: elbv2.NetworkTargetGroup,
) -> tuple[appscaling.ScalableTarget, appscaling.CfnScalingPolicy]:
    target = appscaling.ScalableTarget(
        scope,
        "Scaling",
        service_namespace=appscaling.ServiceNamespace.ECS,
        resource_id=f"service/{cluster.cluster_name}/{service.service_name}",
        scalable_dimension="ecs:service:DesiredCount",
        min_capacity=s.min_tasks,
        max_capacity=s.max_tasks,
        role=iam.Role.from_role_arn(
            scope,
            "ScalingRole",
            ECS_SCALING_ROLE.format(partition=Aws.PARTITION, account=Aws.ACCOUNT_ID),
        ),
    )
    target.scale_to_track_metric(
        "Cpu",
        target_value=s.cpu_target,
        predefined_metric=appscaling.PredefinedMetric.ECS_SERVICE_AVERAGE_CPU_UTILIZATION,
        scale_in_cooldown=Duration.seconds(s.scale_in_cooldown),
        scale_out_cooldown=Duration.seconds(s.scale_out_cooldown),
    )
    # Connections per task.  The NLB publishes ActiveFlowCount per load balancer (no per-target
    # or per-target-group figure), and HealthyHostCount per target group: this balancer has one
    # target group, so flows / healthy targets is the mean number of CPs per serving task.  The
    # CDK's target-tracking construct takes a single metric, hence the CloudFormation resource with
    # metric math.
    cfn = appscaling.CfnScalingPolicy
    balancer_dimension = cfn.TargetTrackingMetricDimensionProperty(
        name="LoadBalancer", value=balancer.load_balancer_full_name
    )
    policy = cfn(
        scope,
        "ConnectionsScaling",
        policy_name="ConnectionsPerTask",
        policy_type="TargetTrackingScaling",
        scaling_target_id=target.scalable_target_id,
        target_tracking_scaling_policy_configuration=cfn.TargetTrackingScalingPolicyConfigurationProperty(
            target_value=float(s.connections_target),
            scale_in_cooldown=s.scale_in_cooldown,
            scale_out_cooldown=s.scale_out_cooldown,
            customized_metric_specification=cfn.CustomizedMetricSpecificationProperty(
                metrics=[
                    cfn.TargetTrackingMetricDataQueryProperty(
                        id="flows",
                        metric_stat=cfn.TargetTrackingMetricStatProperty(
                            metric=cfn.TargetTrackingMetricProperty(
                                namespace="AWS/NetworkELB",
                                metric_name="ActiveFlowCount",
                                dimensions=[balancer_dimension],
                            ),
                            stat="Average",
                        ),
                        return_data=False,
                    ),
                    cfn.TargetTrackingMetricDataQueryProperty(
                        id="tasks",
                        metric_stat=cfn.TargetTrackingMetricStatProperty(
                            metric=cfn.TargetTrackingMetricProperty(
                                namespace="AWS/NetworkELB",
                                metric_name="HealthyHostCount",
                                dimensions=[
                                    balancer_dimension,
                                    cfn.TargetTrackingMetricDimensionProperty(
                                        name="TargetGroup",
                                        value=target_group.target_group_full_name,
                                    ),
                                ],
                            ),
                            stat="Minimum",
                        ),
                        return_data=False,
                    ),
                    cfn.TargetTrackingMetricDataQueryProperty(
                        id="perTask",
                        expression="flows / tasks",
                        label="Charge point connections per healthy task",
                        return_data=True,
                    ),
                ]
            ),
        ),
    )
    return target, policy
