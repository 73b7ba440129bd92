"""What gateway and fakeiot share (iotshared), and that fakeiot needs nothing else of the gateway."""

from __future__ import annotations

import pytest

import iotshared
from gateway import errors as gateway_errors
from gateway.credentials import verify_password as gateway_verify
from gateway.identity import validate_identity as gateway_validate

from .processes import run


def test_fakeiot_runs_without_importing_the_gateway() -> None:
    probe = run(
        "-c",
        "import sys, fakeiot, fakeiot.cli, fakeiot.service, fakeiot.broker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'gateway'))",
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]"


def test_the_gateway_refuses_identities_with_its_own_error_which_is_also_iotshareds() -> None:
    with pytest.raises(gateway_errors.InvalidIdentity) as refused:
        gateway_validate("CP/1")
    assert isinstance(refused.value, iotshared.InvalidIdentity)
    assert refused.value.close_code == gateway_errors.CLOSE_POLICY_VIOLATION
    with pytest.raises(iotshared.InvalidIdentity, match="'/' is not allowed") as shared:
        iotshared.validate_identity("CP/1")
    assert not isinstance(shared.value, gateway_errors.GatewayError)
    assert gateway_validate("CP.1") == iotshared.validate_identity("CP.1")
    assert iotshared.validate_identity("CP.1").thing_name == "CP:2E1"


def test_a_hash_written_as_the_cli_writes_it_is_checked_by_the_gateway() -> None:
    stored = iotshared.hash_password("a-password-of-20-chr", iterations=1000)
    assert stored.startswith("pbkdf2-sha256:1000:")
    assert gateway_verify("a-password-of-20-chr", stored)
    assert not gateway_verify("another-password-20c", stored)
    with pytest.raises(iotshared.PasswordRejected):
        iotshared.hash_password("short")


def test_strict_json_is_bounded_and_refuses_nan() -> None:
    assert iotshared.strict_loads('{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    with pytest.raises(iotshared.JsonTooDeep):
        iotshared.strict_loads("[" * 40 + "]" * 40)
    with pytest.raises(iotshared.JsonRejected, match="NaN is not JSON"):
        iotshared.strict_loads("[NaN]")
