"""The id-token list: the decision (pure), the per-version rendering checked against the ocpp
package's schemas, IdTokenList against fakeiot and moto's DynamoDB over real sockets, the
processor's start-up, and ``python -m gateway.processor idtoken`` as a subprocess."""

from __future__ import annotations

import itertools
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import ocpp.messages
import pytest
import trio
from ocpp.exceptions import FormatViolationError, TypeConstraintViolationError
from ocpp.messages import CallResult, validate_payload
from trio.testing import MockClock

from fakeiot import FakeIot, FakeIotConfig
from gateway.mqtt_link import MqttDriver
from gateway.processor import Processor, ProcessorSettings
from gateway.processor.authorization import (
    AcceptAll,
    Authorization,
    AuthorizationUnavailable,
    id_tag_info,
    id_token_info,
)
from gateway.processor.config import load_processor_config
from gateway.processor.idtokens import (
    IdTokenInputError,
    IdTokenList,
    IdTokenRecord,
    IdTokenTable,
    IdTokenTableMissing,
    build_authorizer,
    decide,
    from_item,
    make_dynamodb_client,
    open_authorizer,
    parse_expiry,
    parse_status,
    to_item,
)

from .processes import closed_port, run

ocpp.messages.ASYNC_VALIDATION = False  # validate in this thread, as the processor does

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PAST = NOW - timedelta(days=1)
FUTURE = NOW + timedelta(days=365)

# -- pure ---------------------------------------------------------------------------


def test_parse_status_and_expiry() -> None:
    assert [parse_status(s) for s in ("Accepted", "Blocked", "Expired", "Invalid")] == [
        "Accepted",
        "Blocked",
        "Expired",
        "Invalid",
    ]
    for bad in ("accepted", "Unknown", "ConcurrentTx", ""):
        with pytest.raises(IdTokenInputError, match="unknown status"):
            parse_status(bad)
    assert parse_expiry("2027-01-01T00:00:00Z") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expiry("2027-01-01T02:00:00+02:00") == datetime(2027, 1, 1, tzinfo=UTC)
    for bad in ("2027-01-01T00:00:00", "tomorrow", "2027-13-01T00:00:00Z", ""):
        with pytest.raises(IdTokenInputError, match="UTC offset"):
            parse_expiry(bad)


def test_decision() -> None:
    assert decide(None, NOW) == Authorization("Unknown")
    for status in ("Accepted", "Blocked", "Expired", "Invalid"):
        record = IdTokenRecord("T", parse_status(status), FUTURE, "G")
        assert decide(record, NOW) == Authorization(record.status, FUTURE, "G")
    for status in ("Accepted", "Blocked", "Invalid"):  # a past expiry date wins
        record = IdTokenRecord("T", parse_status(status), PAST)
        assert decide(record, NOW).status == "Expired"
    assert decide(IdTokenRecord("T", "Accepted", NOW), NOW).status == "Expired"
    assert decide(IdTokenRecord("T", "Accepted"), NOW) == Authorization("Accepted")


def test_item_round_trip_and_bad_items() -> None:
    record = IdTokenRecord("TAG", "Blocked", FUTURE, "GROUP")
    item = to_item(record)
    assert item["idToken"] == {"S": "TAG"} and item["status"] == {"S": "Blocked"}
    assert from_item(item) == record
    assert from_item(to_item(IdTokenRecord("T", "Accepted"))) == IdTokenRecord("T", "Accepted")
    for bad in (
        {"idToken": {"S": "T"}, "status": {"S": "Fine"}},
        {"idToken": {"S": "T"}},
        {"idToken": {"S": "T"}, "status": {"N": "1"}},
        {"idToken": {"S": "T"}, "status": {"S": "Accepted"}, "expiryDate": {"S": "soon"}},
    ):
        with pytest.raises(IdTokenInputError, match="stored id token 'T'|not a string"):
            from_item(bad)


DECISIONS = [
    Authorization("Accepted"),
    Authorization("Accepted", FUTURE, "GROUP-1"),
    Authorization("Blocked", FUTURE),
    Authorization("Expired", PAST),
    Authorization("Invalid"),
    Authorization("Unknown"),
]


@pytest.mark.parametrize("decision", DECISIONS, ids=lambda d: d.status)
async def test_rendering_matches_the_ocpp_schemas(decision: Authorization) -> None:
    info16 = id_tag_info(decision)
    await validate_payload(CallResult("1", {"idTagInfo": info16}, action="Authorize"), "1.6")
    assert info16["status"] == ("Invalid" if decision.status == "Unknown" else decision.status)
    info201 = id_token_info(decision)
    await validate_payload(CallResult("1", {"idTokenInfo": info201}, action="Authorize"), "2.0.1")
    assert info201["status"] == decision.status
    if decision.expiry is not None:
        assert parse_expiry(info16["expiryDate"]) == decision.expiry
        assert parse_expiry(info201["cacheExpiryDateTime"]) == decision.expiry
    if decision.group_id is not None:
        assert info16["parentIdTag"] == decision.group_id
        assert info201["groupIdToken"]["idToken"] == decision.group_id


async def test_the_schemas_would_catch_a_bad_rendering() -> None:
    """The check above can fail: a status 1.6 does not know is refused by its schema."""
    with pytest.raises((FormatViolationError, TypeConstraintViolationError)):
        await validate_payload(
            CallResult("1", {"idTagInfo": {"status": "Unknown"}}, "Authorize"), "1.6"
        )


# -- IdTokenList against a real DynamoDB API (fakeiot; moto's server) -----------------


@pytest.fixture
def iot(tmp_path: Path) -> Iterator[FakeIot]:
    iot = FakeIot(FakeIotConfig(mqtt_port=0, api_port=0, data_dir=tmp_path / "fakeiot"))
    iot.start()
    try:
        yield iot
    finally:
        iot.stop()


_TABLES = itertools.count(1)


@pytest.fixture(params=["fakeiot", "moto"])
def table(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[IdTokenTable]:
    """A fresh, created id-token table on fakeiot or on moto's server."""
    if request.param == "moto":
        url = request.getfixturevalue("moto_url")
    else:
        url = request.getfixturevalue("iot").api_url
    client = make_dynamodb_client("us-east-1", url)
    table = IdTokenTable(client, f"ocppIdTokens-{next(_TABLES)}")  # moto lives for the module
    try:
        assert table.create()
        yield table
    finally:
        client.close()


async def test_each_status_from_the_table(table: IdTokenTable) -> None:
    now = datetime.now(UTC)
    future, past = now + timedelta(days=30), now - timedelta(minutes=1)
    table.put(IdTokenRecord("ACC", "Accepted", future.replace(microsecond=0), "FLEET"))
    table.put(IdTokenRecord("BLK", "Blocked"))
    table.put(IdTokenRecord("EXP", "Expired"))
    table.put(IdTokenRecord("INV", "Invalid"))
    table.put(IdTokenRecord("OLD", "Accepted", past))
    authorizer = IdTokenList(table)
    accepted = await authorizer.authorize("CP1", "ACC", None)
    assert accepted == Authorization("Accepted", future.replace(microsecond=0), "FLEET")
    assert id_tag_info(accepted)["parentIdTag"] == "FLEET"
    assert (await authorizer.authorize("CP1", "BLK", "ISO14443")).status == "Blocked"
    assert (await authorizer.authorize("CP1", "EXP", None)).status == "Expired"
    assert (await authorizer.authorize("CP1", "INV", None)).status == "Invalid"
    assert (await authorizer.authorize("CP1", "OLD", None)).status == "Expired"
    unknown = await authorizer.authorize("CP1", "NOPE", "ISO14443")
    assert unknown == Authorization("Unknown")
    assert id_tag_info(unknown) == {"status": "Invalid"}
    assert id_token_info(unknown) == {"status": "Unknown"}
    assert (await authorizer.authorize("CP1", "", "NoAuthorization")).status == "Unknown"
    assert [r.id_token for r in table.scan() if isinstance(r, IdTokenRecord)] == [
        "ACC",
        "BLK",
        "EXP",
        "INV",
        "OLD",
    ]


async def test_answers_are_cached_for_the_ttl(iot: FakeIot, mock_clock: MockClock) -> None:
    client = make_dynamodb_client("us-east-1", iot.api_url)
    try:
        table = IdTokenTable(client)
        table.create()
        table.put(IdTokenRecord("T1", "Accepted"))
        authorizer = IdTokenList(table, ttl=30, max_entries=2)
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Accepted"
        table.put(IdTokenRecord("T1", "Blocked"))
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Accepted"  # cached
        mock_clock.jump(31)
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Blocked"
        # Bounded: a third token pushes out the least recently used.
        table.put(IdTokenRecord("T2", "Accepted"))
        table.put(IdTokenRecord("T3", "Accepted"))
        await authorizer.authorize("CP1", "T2", None)
        await authorizer.authorize("CP1", "T3", None)
        table.put(IdTokenRecord("T1", "Invalid"))
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Invalid"  # re-read
    finally:
        client.close()


async def test_missing_table_is_unavailable_not_cached(iot: FakeIot) -> None:
    client = make_dynamodb_client("us-east-1", iot.api_url)
    try:
        table = IdTokenTable(client, "notCreatedYet")
        authorizer = IdTokenList(table)
        with pytest.raises(IdTokenTableMissing, match="idtoken create-table"):
            await authorizer.authorize("CP1", "T1", None)
        table.create()
        table.put(IdTokenRecord("T1", "Accepted"))
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Accepted"
    finally:
        client.close()


async def test_a_bad_stored_item_is_unavailable(iot: FakeIot) -> None:
    client = make_dynamodb_client("us-east-1", iot.api_url)
    try:
        table = IdTokenTable(client)
        table.create()
        client.put_item(TableName=table.name, Item={"idToken": {"S": "T"}, "status": {"S": "Ok"}})
        with pytest.raises(AuthorizationUnavailable, match="unknown status 'Ok'"):
            await IdTokenList(table).authorize("CP1", "T", None)
    finally:
        client.close()


async def test_unreachable_store_raises_promptly() -> None:
    with closed_port() as port:
        client = make_dynamodb_client("us-east-1", f"http://127.0.0.1:{port}")
        try:
            with trio.fail_after(20):
                with pytest.raises(AuthorizationUnavailable, match="GetItem failed"):
                    await IdTokenList(IdTokenTable(client)).authorize("CP1", "T1", None)
        finally:
            client.close()


async def test_a_silent_store_is_bounded_by_the_timeouts() -> None:
    """A server that accepts the connection and never answers: read timeout, retry, give up."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshakes; nobody ever reads
        client = make_dynamodb_client("us-east-1", f"http://127.0.0.1:{silent.getsockname()[1]}")
        try:
            started = time.monotonic()
            with pytest.raises(AuthorizationUnavailable, match="GetItem failed"):
                await IdTokenList(IdTokenTable(client)).authorize("CP1", "T1", None)
            assert time.monotonic() - started < 15  # 2 attempts x 3 s read timeout, plus backoff
        finally:
            client.close()


# -- the processor's options and start-up --------------------------------------------


async def test_accept_all_is_the_announced_default(caplog: pytest.LogCaptureFixture) -> None:
    config = load_processor_config([], {})
    assert config.authorization == "accept-all" and config.id_token_table == "ocppIdTokens"
    caplog.set_level(logging.INFO, logger="gateway.processor")
    async with open_authorizer(config) as authorizer:
        assert isinstance(authorizer, AcceptAll)
        assert (await authorizer.authorize("CP1", "ANY", None)).status == "Accepted"
        # The processor announces it, once, when it starts with it.
        processor = Processor(
            cast(MqttDriver, None),
            cast(Any, None),
            ProcessorSettings(heartbeat_interval=7),
            authorizer=authorizer,
        )
        processor.announce()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "accept-all" in w] == [
        "processor: every id token is accepted (authorizer: accept-all (every id token "
        "Accepted: development only))"
    ]


async def test_id_token_table_start_up(iot: FakeIot, caplog: pytest.LogCaptureFixture) -> None:
    env = {"PROCESSOR_AUTHORIZATION": "id-token-table", "PROCESSOR_IOT_API_URL": iot.api_url}
    config = load_processor_config(["--id-token-table", "cpoTokens"], env)
    with pytest.raises(IdTokenTableMissing, match="cpoTokens does not exist"):
        async with open_authorizer(config):
            pass  # pragma: no cover - refused before
    client = make_dynamodb_client("us-east-1", iot.api_url)
    try:
        table = IdTokenTable(client, "cpoTokens")
        table.create()
        table.put(IdTokenRecord("T1", "Blocked"))
    finally:
        client.close()
    caplog.set_level(logging.INFO, logger="gateway.processor.idtokens")
    async with open_authorizer(config) as authorizer:
        assert isinstance(authorizer, IdTokenList)
        assert (await authorizer.authorize("CP1", "T1", None)).status == "Blocked"
    assert any("id-token-table cpoTokens" in r.getMessage() for r in caplog.records)


async def test_start_up_with_an_unreachable_store_warns(caplog: pytest.LogCaptureFixture) -> None:
    with closed_port() as port:
        env = {"PROCESSOR_IOT_API_URL": f"http://127.0.0.1:{port}"}
        config = load_processor_config(["--authorization", "id-token-table"], env)
        assert isinstance(build_authorizer(config), IdTokenList)
        async with open_authorizer(config) as authorizer:
            with pytest.raises(AuthorizationUnavailable):
                await authorizer.authorize("CP1", "T1", None)
    assert any(
        r.levelno == logging.WARNING and "InternalError" in r.getMessage() for r in caplog.records
    )


def test_bad_options_are_refused() -> None:
    done = run("-m", "gateway.processor", "--authorization", "allow-everyone")
    assert done.returncode == 2
    assert "--authorization must be one of accept-all, id-token-table" in done.stderr
    done = run("-m", "gateway.processor", "--id-token-table", "x")
    assert done.returncode == 2 and "DynamoDB table name" in done.stderr


# -- the CLI, as a subprocess against a running fakeiot ------------------------------


def test_cli_against_fakeiot(iot: FakeIot) -> None:
    def idtoken(*args: str, **env: str) -> Any:
        return run(
            "-m",
            "gateway.processor",
            "idtoken",
            "--iot-api-url",
            iot.api_url,
            *args,
            env=env,
        )

    missing = idtoken("put", "TAG1", "--status", "Accepted")
    assert missing.returncode == 1
    assert "ocppIdTokens does not exist" in missing.stderr
    assert "python -m gateway.processor idtoken create-table" in missing.stderr
    assert "Traceback" not in missing.stderr

    created = idtoken("create-table")
    assert created.returncode == 0 and "table ocppIdTokens created" in created.stdout
    again = idtoken("create-table")
    assert again.returncode == 0 and "already exists" in again.stdout

    bad_status = idtoken("put", "TAG1", "--status", "Maybe")
    assert bad_status.returncode == 2
    assert "unknown status 'Maybe': one of Accepted, Blocked, Expired, Invalid" in bad_status.stderr
    bad_date = idtoken("put", "TAG1", "--status", "Accepted", "--expiry", "2027-01-01")
    assert bad_date.returncode == 2 and "invalid expiry date '2027-01-01'" in bad_date.stderr
    too_long = idtoken("put", "T" * 37, "--status", "Accepted")
    assert too_long.returncode == 2 and "invalid id token" in too_long.stderr

    put = idtoken(
        "put", "TAG1", "--status", "Accepted", "--expiry", "2099-01-01T00:00:00Z", "--group", "G"
    )
    assert put.returncode == 0, put.stderr
    assert (
        idtoken("put", "OLD", "--status", "Accepted", "--expiry", "2001-01-01T00:00Z").returncode
        == 0
    )
    got = idtoken("get", "TAG1")
    assert got.returncode == 0
    assert json.loads(got.stdout) == {
        "idToken": "TAG1",
        "status": "Accepted",
        "expiryDate": "2099-01-01T00:00:00+00:00",
        "groupIdToken": "G",
        "answer": "Accepted",
    }
    listed = idtoken("list")
    assert listed.returncode == 0
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["idToken"], r["answer"]) for r in rows] == [("OLD", "Expired"), ("TAG1", "Accepted")]

    deleted = idtoken("delete", "TAG1")
    assert deleted.returncode == 0 and "deleted TAG1" in deleted.stdout
    gone = idtoken("get", "TAG1")
    assert gone.returncode == 1 and "no id token 'TAG1' in table ocppIdTokens" in gone.stderr
    assert idtoken("delete", "TAG1").returncode == 1

    # The table name from the processor's own variable, checked like the option.
    other = idtoken("list", PROCESSOR_ID_TOKEN_TABLE="otherTokens")
    assert other.returncode == 1 and "otherTokens does not exist" in other.stderr
    bad_name = idtoken("list", PROCESSOR_ID_TOKEN_TABLE="x")
    assert bad_name.returncode == 2
    assert "PROCESSOR_ID_TOKEN_TABLE must be a DynamoDB table name" in bad_name.stderr
