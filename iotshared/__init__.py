"""What the gateway and fakeiot share: the contract of the Thing registry and of AWS IoT.

Neither ``gateway`` nor ``fakeiot`` imports the other's modules for these;
both import them from here.  Pure code, no I/O:

* :mod:`iotshared.identity`: charge point identity rules and the identity <->
  AWS IoT Thing name mapping;
* :mod:`iotshared.attributes`: the Thing attribute names the gateway reads;
* :mod:`iotshared.passwords`: the password-hash format stored in them;
* :mod:`iotshared.strict_json`: bounded, strict JSON parsing of untrusted text;
* :mod:`iotshared.errors`: the exceptions, under :class:`IotSharedError`;
* :mod:`iotshared.iot_policy`: the gateway certificate's IoT policy and the heartbeat rule's
  SQL, as ``scripts/provision.py`` and the CDK stack (``deploy/``) create them.
"""

from .attributes import (
    PASSWORD_HASH_ATTRIBUTE,
    SECURITY_PROFILE_ATTRIBUTE,
    SERIAL_NUMBER_ATTRIBUTE,
)
from .errors import InvalidIdentity, IotSharedError, JsonRejected, JsonTooDeep, PasswordRejected
from .identity import ChargePointIdentity, cp_id_for, thing_name_for, validate_identity
from .passwords import check_password_rules, generate_password, hash_password, verify_password
from .strict_json import MAX_JSON_DEPTH, json_depth, strict_loads

__all__ = [
    "MAX_JSON_DEPTH",
    "PASSWORD_HASH_ATTRIBUTE",
    "SECURITY_PROFILE_ATTRIBUTE",
    "SERIAL_NUMBER_ATTRIBUTE",
    "ChargePointIdentity",
    "InvalidIdentity",
    "IotSharedError",
    "JsonRejected",
    "JsonTooDeep",
    "PasswordRejected",
    "check_password_rules",
    "cp_id_for",
    "generate_password",
    "hash_password",
    "json_depth",
    "strict_loads",
    "thing_name_for",
    "validate_identity",
    "verify_password",
]
