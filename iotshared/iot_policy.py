"""The AWS IoT policy document of the gateway's certificate, and the sample's heartbeat rule.

One definition for the two places that create them: ``scripts/provision.py`` (CreatePolicy,
CreateTopicRule) and the CDK stack in ``deploy/`` (``AWS::IoT::Policy``,
``AWS::IoT::TopicRule``).  fakeiot's ACL (:mod:`fakeiot.policy`) enforces the same rules.
Pure data, no I/O.
"""

from __future__ import annotations

from typing import Any

# The AWS sample's heartbeat rule: each Heartbeat CALL on <cp-id>/in writes the CP's last
# timestamp into a DynamoDB table.
HEARTBEAT_SQL = (
    "SELECT topic(1) AS chargePointId, timestamp() AS lastTimestamp "
    "FROM '+/in' WHERE get(*, 2) = 'Heartbeat'"
)


def gateway_policy(partition: str = "aws", region: str = "*", account: str = "*") -> dict[str, Any]:
    """The gateway's policy: each MQTT client (client id = CP id) confined to its own topics.

    ``region`` and ``account`` narrow the resource ARNs (the CDK stack passes its own); the
    defaults match any, as ``scripts/provision.py`` has always written them.
    """
    arn = f"arn:{partition}:iot:{region}:{account}:"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "iot:Connect", "Resource": f"{arn}client/*"},
            {
                "Effect": "Allow",
                "Action": "iot:Publish",
                "Resource": [
                    f"{arn}topic/${{iot:ClientId}}/in",
                    f"{arn}topic/$aws/things/*/shadow/update",
                ],
            },
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn}topicfilter/${{iot:ClientId}}/out",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn}topic/${{iot:ClientId}}/out",
            },
            # Registry events (gateway/revocation.py): a deleted Thing or a changed password closes the live CP.
            {
                "Effect": "Allow",
                "Action": "iot:Subscribe",
                "Resource": f"{arn}topicfilter/$aws/events/thing/*",
            },
            {
                "Effect": "Allow",
                "Action": "iot:Receive",
                "Resource": f"{arn}topic/$aws/events/thing/*",
            },
        ],
    }
