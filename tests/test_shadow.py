"""Device-shadow document logic (pure), checked against AWS IoT's documented behaviour."""

import pytest

from fakeiot import shadow
from fakeiot.shadow import ShadowError


def test_first_update_creates_version_1_with_metadata_and_no_previous() -> None:
    result = shadow.update(
        None, 0, {"state": {"reported": {"a": 1, "b": {"c": 2}}}, "clientToken": "t1"}, now=100
    )
    assert result.stored["state"] == {"reported": {"a": 1, "b": {"c": 2}}}
    assert result.stored["metadata"] == {
        "reported": {"a": {"timestamp": 100}, "b": {"c": {"timestamp": 100}}}
    }
    assert result.accepted == {
        "state": {"reported": {"a": 1, "b": {"c": 2}}},
        "metadata": {"reported": {"a": {"timestamp": 100}, "b": {"c": {"timestamp": 100}}}},
        "version": 1,
        "timestamp": 100,
        "clientToken": "t1",
    }
    assert "previous" not in result.documents
    assert result.documents["current"]["version"] == 1
    assert result.delta is None


def test_merge_null_deletes_and_delta() -> None:
    first = shadow.update(None, 0, {"state": {"reported": {"a": 1, "b": 2}}}, now=1).stored
    second = shadow.update(
        first, 1, {"state": {"reported": {"b": None}, "desired": {"a": 5, "c": 3}}}, now=2
    )
    assert second.stored["state"] == {"reported": {"a": 1}, "desired": {"a": 5, "c": 3}}
    assert second.documents["previous"]["state"] == {"reported": {"a": 1, "b": 2}}
    assert second.delta == {
        "version": 2,
        "timestamp": 2,
        "state": {"a": 5, "c": 3},
        "metadata": {"a": {"timestamp": 2}, "c": {"timestamp": 2}},
    }
    got = shadow.get_document(second.stored, now=3)
    assert got["state"]["delta"] == {"a": 5, "c": 3}
    third = shadow.update(second.stored, 2, {"state": {"desired": None}}, now=4)
    assert "desired" not in third.stored["state"]


@pytest.mark.parametrize(
    ("request_doc", "code", "message"),
    [
        ({}, 400, "Missing required node: state"),
        ({"state": 5}, 400, "State node must be an object"),
        ({"state": {"reported": 5}}, 400, "Reported node must be an object"),
        ({"state": {"other": {}}}, 400, "State contains an invalid node: 'other'"),
        ({"state": {"reported": {"a": 1}}, "version": "x"}, 400, "Invalid version"),
        ({"state": {"reported": {"a": 1}}, "version": 7}, 409, "Version conflict"),
        (
            {"state": {"reported": {"1": {"2": {"3": {"4": {"5": {"6": {"7": 1}}}}}}}}},
            400,
            "too many levels of nesting",
        ),
    ],
)
def test_rejections_carry_aws_codes(request_doc: dict, code: int, message: str) -> None:
    with pytest.raises(ShadowError) as info:
        shadow.update(None, 0, request_doc, now=1)
    assert info.value.code == code
    assert message in info.value.message
    assert info.value.document(1, "tok") == {
        "code": code,
        "message": info.value.message,
        "timestamp": 1,
        "clientToken": "tok",
    }


def test_invalid_json_is_rejected() -> None:
    with pytest.raises(ShadowError, match="Invalid JSON"):
        shadow.parse_request(b"{nope")


def test_version_numbering_continues_after_delete() -> None:
    result = shadow.update(None, 4, {"state": {"reported": {"a": 1}}, "version": 4}, now=1)
    assert result.stored["version"] == 5
