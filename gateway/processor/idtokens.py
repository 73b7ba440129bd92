"""The id-token list: an :class:`~gateway.processor.authorization.Authorizer` over a DynamoDB table.

The table (default ``ocppIdTokens``) lives where the CPO's other data lives:
DynamoDB on AWS, fakeiot's DynamoDB subset offline (same boto3 code, only the
endpoint URL differs).  One item per id token::

    idToken       S  partition key: the OCPP 1.6 idTag / OCPP 2.0.1 idToken.idToken
    status        S  Accepted | Blocked | Expired | Invalid
    expiryDate    S  optional, ISO 8601 with a UTC offset (2027-01-01T00:00:00Z)
    groupIdToken  S  optional: 1.6 parentIdTag, 2.0.1 groupIdToken.idToken

The decision (:func:`decide`): a token not in the table is ``Unknown`` (OCPP
2.0.1's "identifier is unknown"; rendered ``Invalid`` for OCPP 1.6, which has no
Unknown); a token whose ``expiryDate`` has passed is ``Expired`` whatever its
stored status; otherwise the stored status.

The processor reads with ``GetItem`` only (IAM: ``dynamodb:GetItem``).  Answers
are cached for :data:`CACHE_TTL` seconds (at most :data:`CACHE_SIZE` tokens), so
a change in the table takes up to that long to apply; each call is bounded by
botocore's timeouts (:func:`make_dynamodb_client`).  A store that cannot answer
(table missing, unreachable, throttled) raises
:class:`~gateway.processor.authorization.AuthorizationUnavailable`: the CALL gets
CALLERROR InternalError.  Answering a status instead would be worse: a wrong
Invalid or Blocked lands in the charge point's authorization cache, a wrong
Accepted lets anyone charge; after a CALLERROR the charge point falls back on
its own offline rules (local list, cache, ``LocalAuthorizeOffline``) and retries
transaction messages.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import boto3
import trio
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .authorization import AcceptAll, Authorization, AuthorizationUnavailable, Authorizer, Status
from .config import ProcessorConfig

log = logging.getLogger(__name__)

DEFAULT_TABLE: str = ProcessorConfig.id_token_table  # --id-token-table's default
KEY = "idToken"
STORED_STATUSES: tuple[Status, ...] = ("Accepted", "Blocked", "Expired", "Invalid")
MAX_TOKEN_LENGTH = 36  # OCPP 2.0.1 IdTokenType.idToken; 1.6's idTag is at most 20
CACHE_TTL = 30.0  # seconds an answer is reused
CACHE_SIZE = 10_000  # tokens remembered at most (least recently used go first)
CREATE_HINT = "create it with: python -m gateway.processor idtoken create-table"


class IdTokenInputError(ValueError):
    """A token, status or date that cannot go into the table; ``str()`` says why."""


@dataclass(frozen=True)
class IdTokenRecord:
    """One item of the table."""

    id_token: str
    status: Status
    expiry: datetime | None = None  # timezone-aware
    group_id: str | None = None


# -- pure: parsing, the item's shape, the decision ---------------------------------


def check_token(token: str) -> str:
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
        raise IdTokenInputError(
            f"invalid id token {token[:40]!r}: 1-{MAX_TOKEN_LENGTH} printable characters"
        )
    return token


def parse_status(text: str) -> Status:
    for status in STORED_STATUSES:
        if text == status:
            return status
    raise IdTokenInputError(f"unknown status {text!r}: one of {', '.join(STORED_STATUSES)}")


def parse_expiry(text: str) -> datetime:
    """ISO 8601 with a UTC offset (``Z`` or ``+02:00``); a date without one is refused."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise IdTokenInputError(
            f"invalid expiry date {text[:40]!r}: ISO 8601 with a UTC offset, "
            "e.g. 2027-01-01T00:00:00Z"
        )
    return value


def to_item(record: IdTokenRecord) -> dict[str, Any]:
    """The record as a DynamoDB item (AttributeValues)."""
    item: dict[str, Any] = {KEY: {"S": record.id_token}, "status": {"S": record.status}}
    if record.expiry is not None:
        item["expiryDate"] = {"S": record.expiry.isoformat()}
    if record.group_id is not None:
        item["groupIdToken"] = {"S": record.group_id}
    return item


def from_item(item: dict[str, Any]) -> IdTokenRecord:
    """A stored item as a record; :class:`IdTokenInputError` if someone stored a bad one."""

    def text(name: str) -> str | None:
        value = item.get(name)
        if value is None:
            return None
        if not isinstance(value, dict) or not isinstance(value.get("S"), str):
            raise IdTokenInputError(f"attribute {name} is not a string (S)")
        return cast(str, value["S"])

    token = text(KEY) or ""
    try:
        status = parse_status(text("status") or "")
        expiry_text = text("expiryDate")
        expiry = parse_expiry(expiry_text) if expiry_text is not None else None
    except IdTokenInputError as exc:
        raise IdTokenInputError(f"stored id token {token!r}: {exc}") from None
    return IdTokenRecord(token, status, expiry, text("groupIdToken"))


def decide(record: IdTokenRecord | None, now: datetime) -> Authorization:
    """The answer for a token: Unknown when absent, Expired once its expiry date has passed."""
    if record is None:
        return Authorization("Unknown")
    status = record.status
    if record.expiry is not None and record.expiry <= now:
        status = "Expired"
    return Authorization(status, record.expiry, record.group_id)


# -- the table (blocking boto3 calls: run them in a thread) ------------------------


def make_dynamodb_client(region: str, endpoint_url: str | None) -> Any:
    """A DynamoDB client whose every call is bounded (connect 2 s, read 3 s, 2 attempts).

    ``endpoint_url``: fakeiot's API URL; None: AWS's regional endpoint.  Against
    fakeiot without credentials in boto3's chain, placeholder keys are used.
    """
    session = boto3.session.Session(region_name=region)
    config = Config(
        retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2, read_timeout=3
    )
    extra: dict[str, Any] = {}
    if endpoint_url and session.get_credentials() is None:
        extra = {"aws_access_key_id": "fakeiot", "aws_secret_access_key": "fakeiot"}
    return session.client("dynamodb", endpoint_url=endpoint_url, config=config, **extra)


class IdTokenTable:
    """The table's operations (what the CLI and the authorizer do), errors made readable.

    Every method blocks (boto3); each failure raises
    :class:`~gateway.processor.authorization.AuthorizationUnavailable` saying what happened.
    """

    def __init__(self, client: Any, name: str = DEFAULT_TABLE) -> None:
        self.client = client
        self.name = name

    def get(self, token: str) -> IdTokenRecord | None:
        with self._errors("GetItem"):
            response = self.client.get_item(TableName=self.name, Key={KEY: {"S": token}})
        item = response.get("Item")
        if not item:
            return None
        try:
            return from_item(item)
        except IdTokenInputError as exc:
            raise AuthorizationUnavailable(f"table {self.name}: {exc}") from None

    def put(self, record: IdTokenRecord) -> None:
        with self._errors("PutItem"):
            self.client.put_item(TableName=self.name, Item=to_item(record))

    def delete(self, token: str) -> bool:
        """Whether there was such a token."""
        with self._errors("DeleteItem"):
            response = self.client.delete_item(
                TableName=self.name, Key={KEY: {"S": token}}, ReturnValues="ALL_OLD"
            )
        return bool(response.get("Attributes"))

    def scan(self) -> Iterator[IdTokenRecord | IdTokenInputError]:
        """Every item, page by page; a malformed item comes as the error that describes it."""
        start: dict[str, Any] | None = None
        while True:
            kwargs: dict[str, Any] = {"TableName": self.name}
            if start:
                kwargs["ExclusiveStartKey"] = start
            with self._errors("Scan"):
                page = self.client.scan(**kwargs)
            for item in page.get("Items", []):
                try:
                    yield from_item(item)
                except IdTokenInputError as exc:
                    yield exc
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def create(self) -> bool:
        """Create the table (on demand billing) and wait until it is ACTIVE; False if it exists."""
        try:
            with self._errors("CreateTable"):
                self.client.create_table(
                    TableName=self.name,
                    KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
                    AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                    BillingMode="PAY_PER_REQUEST",
                )
        except _TableExists:
            return False
        with self._errors("DescribeTable"):
            self.client.get_waiter("table_exists").wait(
                TableName=self.name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        return True

    def _errors(self, operation: str) -> _ErrorMap:
        return _ErrorMap(self.name, operation)


class IdTokenTableMissing(AuthorizationUnavailable):
    """The table does not exist (in this region, or on this fakeiot)."""


class _TableExists(AuthorizationUnavailable):
    pass


class _ErrorMap:
    """botocore's exceptions -> :class:`AuthorizationUnavailable` with a readable reason."""

    def __init__(self, table: str, operation: str) -> None:
        self.table, self.operation = table, operation

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), error.get("Message", "")
            if code == "ResourceNotFoundException":
                raise IdTokenTableMissing(
                    f"id-token table {self.table} does not exist ({CREATE_HINT})"
                ) from None
            if code == "ResourceInUseException" and self.operation == "CreateTable":
                raise _TableExists(f"table {self.table} already exists") from None
            raise AuthorizationUnavailable(
                f"id-token table {self.table}: {self.operation} refused: {code}: {message}"
            ) from None
        if isinstance(exc, BotoCoreError):  # no route, timeout, no credentials, waiter gave up
            raise AuthorizationUnavailable(
                f"id-token table {self.table}: {self.operation} failed: {exc}"
            ) from None


# -- the authorizer -----------------------------------------------------------------


class IdTokenList:
    """:class:`~gateway.processor.authorization.Authorizer` answering from the id-token table."""

    def __init__(
        self,
        table: IdTokenTable,
        *,
        ttl: float = CACHE_TTL,
        max_entries: int = CACHE_SIZE,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.table = table
        self.ttl = ttl
        self.max_entries = max_entries
        self._now = now
        self._cache: OrderedDict[str, tuple[float, IdTokenRecord | None]] = OrderedDict()
        self.description = f"id-token-table {table.name} (DynamoDB GetItem, cached {ttl:g} s)"

    async def authorize(self, cp_id: str, id_token: str, token_type: str | None) -> Authorization:
        if not id_token or len(id_token) > MAX_TOKEN_LENGTH:
            return Authorization("Unknown")  # cannot be a key of the table (DynamoDB refuses "")
        record = await self._lookup(id_token)
        decision = decide(record, self._now())
        log.debug("%s: id token %s: %s", cp_id, id_token, decision.status)
        return decision

    async def _lookup(self, id_token: str) -> IdTokenRecord | None:
        now = trio.current_time()
        cached = self._cache.get(id_token)
        if cached is not None and cached[0] > now:
            self._cache.move_to_end(id_token)
            return cached[1]
        try:
            # Not abandoned on cancellation (no orphan thread): botocore's timeouts bound the call.
            record = await trio.to_thread.run_sync(self.table.get, id_token)
        except AuthorizationUnavailable as exc:
            log.error("authorization unavailable: %s", exc)
            raise
        self._cache[id_token] = (trio.current_time() + self.ttl, record)
        self._cache.move_to_end(id_token)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return record

    def close(self) -> None:
        self.table.client.close()


# -- construction from the processor's options ----------------------------------------


def build_authorizer(config: ProcessorConfig) -> Authorizer:
    """The authorizer ``--authorization`` names (blocking: creates a boto3 client).

    ``id-token-table``: DynamoDB at ``--iot-api-url`` when set (fakeiot), else AWS's
    regional endpoint; the table is ``--id-token-table``.
    """
    if config.authorization == "id-token-table":
        client = make_dynamodb_client(config.region, config.iot_api_url)
        return IdTokenList(IdTokenTable(client, config.id_token_table))
    return AcceptAll()


def _check_table(authorizer: Authorizer) -> None:
    """Start-up: a missing table is a configuration error; an unreachable store only a warning."""
    if not isinstance(authorizer, IdTokenList):
        return
    table = authorizer.table
    try:
        # Any key will do: a missing table says so, and GetItem is the only permission needed.
        table.get("gateway-processor-start-up-check")
    except IdTokenTableMissing:
        raise
    except AuthorizationUnavailable as exc:
        log.warning("authorization: %s (answers will be CALLERROR InternalError meanwhile)", exc)


@asynccontextmanager
async def open_authorizer(config: ProcessorConfig) -> AsyncIterator[Authorizer]:
    """:func:`build_authorizer`, checked, announced in the log, closed on exit."""
    authorizer = await trio.to_thread.run_sync(build_authorizer, config)
    try:
        await trio.to_thread.run_sync(_check_table, authorizer)
        if not isinstance(authorizer, AcceptAll):  # the processor itself warns about AcceptAll
            description = getattr(authorizer, "description", type(authorizer).__name__)
            log.info("authorization: %s", description)
        yield authorizer
    finally:
        if isinstance(authorizer, IdTokenList):
            authorizer.close()
