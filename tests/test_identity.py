"""Identity validation and the identity -> Thing name mapping (pure)."""

import pytest

from gateway.errors import InvalidIdentity
from gateway.identity import (
    cp_id_for,
    identity_from_path,
    thing_name_for,
    validate_identity,
)


@pytest.mark.parametrize(
    ("path", "cp_id"),
    [("/CP1", "CP1"), ("/CP%2D1", "CP-1"), ("/CP1?x=1", "CP1"), ("/a.b@c", "a.b@c"), ("/..", "..")],
)
def test_identity_is_the_one_path_segment_percent_decoded(path: str, cp_id: str) -> None:
    assert identity_from_path(path).cp_id == cp_id


@pytest.mark.parametrize(
    "path", ["/ocpp/CP1", "/CP1/", "/a/b/CP1", "/CP1/../CP2", "//CP1", "/a//CP1", "CP1", ""]
)
def test_anything_but_slash_id_is_refused(path: str) -> None:
    with pytest.raises(
        InvalidIdentity, match="Invalid path: connect to ws\\(s\\)://host/<charge-point-id>"
    ):
        identity_from_path(path)


def test_a_base_path_is_required_when_configured() -> None:
    assert identity_from_path("/ocpp/CP1", "/ocpp").cp_id == "CP1"
    assert identity_from_path("/ocpp/CP1", "/ocpp/").cp_id == "CP1"
    for path in ("/CP1", "/ocpp/x/CP1", "/ocppCP1", "/other/CP1"):
        with pytest.raises(InvalidIdentity, match="host/ocpp/<charge-point-id>"):
            identity_from_path(path, "/ocpp")


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/", "Missing charge point identity"),
        ("/?x=/", "Missing charge point identity"),
        ("/" + "A" * 49, "49 characters, at most 48"),
        ("/CP:1", "':' is not allowed"),
        ("/CP%3A1", "':' is not allowed"),
        ("/CP+1", "'+' is not allowed"),
        ("/CP%2B1", "'+' is not allowed"),
        ("/CP%231", "'#' is not allowed"),
        ("/CP%2F1", "'/' is not allowed"),
        ("/CP%201", "' ' is not allowed"),
        ("/CP%C3%A91", "'é' is not allowed"),
        ("/CP%FF", "not valid UTF-8"),
        ("/%24SYS", "'$' is not allowed"),
    ],
)
def test_bad_identities_are_refused_with_a_specific_reason(path: str, fragment: str) -> None:
    with pytest.raises(InvalidIdentity) as info:
        identity_from_path(path)
    assert fragment in info.value.reason
    assert len(info.value.reason.encode()) <= 123


def test_48_characters_are_allowed() -> None:
    assert validate_identity("A" * 48).cp_id == "A" * 48


@pytest.mark.parametrize(
    ("cp_id", "thing"),
    [
        ("CP1", "CP1"),
        ("cp_1-x", "cp_1-x"),
        ("CP.1", "CP:2E1"),
        ("a@b", "a:40b"),
        ("*=|", ":2A:3D:7C"),
    ],
)
def test_thing_names_escape_what_aws_does_not_allow(cp_id: str, thing: str) -> None:
    assert thing_name_for(cp_id) == thing
    assert cp_id_for(thing) == cp_id
    assert validate_identity(cp_id).thing_name == thing


def test_identity_that_maps_to_a_too_long_thing_name_is_refused() -> None:
    with pytest.raises(InvalidIdentity, match="too many special characters"):
        validate_identity("." * 43)
    assert len(validate_identity("." * 42).thing_name) == 126


def test_targets_that_look_like_urls_are_paths() -> None:
    # Found by hypothesis: urlsplit("//[") raised ValueError instead of giving an identity or a refusal.
    with pytest.raises(InvalidIdentity, match="'\\[' is not allowed"):
        identity_from_path("/[")
    with pytest.raises(InvalidIdentity, match="Invalid path"):
        identity_from_path("//[")
