"""cdk-nag AwsSolutions findings this stack accepts, each with the reason.

cdk-nag 3 reports through CDK's policy validation: a finding that is not acknowledged here stops
the synthesis (``cdk synth``/``cdk deploy``, and the tests).  Each acknowledgment names one
finding (``AwsSolutions-IAM5[Resource::...]`` for one wildcard) on the construct that has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

if TYPE_CHECKING:
    from .stack import GatewayStack


def acknowledge(construct: IConstruct, rule: str, reason: str) -> None:
    Validations.of(construct).acknowledge(Acknowledgment(id=rule, reason=reason))


def suppress_justified_findings(stack: GatewayStack) -> None:
    pass
