"""IAM roles of the stack's own Lambda functions: no managed policy, logs to their own group only."""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct


def lambda_role(scope: Construct, construct_id: str) -> iam.Role:
    """A role for a Lambda function, without AWS's managed AWSLambdaBasicExecutionRole (which
    lets it write any log group): :func:`grant_own_logs` adds what it needs."""
    return iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))


def grant_own_logs(function: lambda_.Function) -> None:
    """Let ``function`` write to its own log group and no other."""
    function.add_to_role_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[f"{function.log_group.log_group_arn}:*"],
        )
    )
