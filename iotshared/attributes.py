"""The Thing attributes the gateway reads and fakeiot's CLI (and ``scripts/provision.py``) write.

The registry is the contract between the two: a charge point's Thing carries
these attribute names; their values are strings (AWS IoT attribute values).
"""

from __future__ import annotations

SECURITY_PROFILE_ATTRIBUTE = (
    "ocppSecurityProfile"  # "0" .. "3"; absent: 1 with a password hash, else 0
)
PASSWORD_HASH_ATTRIBUTE = "ocppPasswordHash"  # see iotshared.passwords: only a salted hash
SERIAL_NUMBER_ATTRIBUTE = "ocppSerialNumber"  # security profile 3: the client certificate's serial
