"""The rules engine's Lambda action offline: a function ARN run as a Python callable.

A rule's action ``{"lambda": {"functionArn": "arn:aws:lambda:<region>:<account>:function:<name>"}}``
invokes that function with the rule's SELECT result as its event.  Offline
there is no Lambda service: fakeiot is started with a map from function ARNs
to Python callables (``--lambda ARN=module:function``, repeatable, or
``FAKEIOT_LAMBDA`` with the pairs comma-separated), each imported once at
start.  An action whose ARN is not in the map is logged and counted as an
error when the rule fires, as AWS would fail to invoke a missing function.

Invoked as AWS IoT invokes a function: asynchronously (the broker never
waits for it), ``function(event, context)`` with the event a JSON object (a
copy of the SELECT result, as it arrives after JSON serialisation) and a
context with ``function_name``, ``function_version``,
``invoked_function_arn``, ``memory_limit_in_mb``, ``aws_request_id``,
``log_group_name``, ``log_stream_name`` and ``get_remaining_time_in_millis()``.

Bounds, so that a flood of messages cannot grow memory or threads without
limit: :class:`LambdaRunner` runs at most ``concurrency`` invocations at
once, one per worker thread (each thread plays one Lambda container), with
at most ``queue_size`` waiting behind them; an invocation beyond that is
dropped, counted in ``throttled`` and logged (at WARNING at most every
:data:`DROP_LOG_INTERVAL` seconds), where AWS would throttle it.  A function
has ``timeout`` seconds (its context says how many remain); one that
overruns is logged and counted in ``timeouts`` once it returns (a Python
thread cannot be stopped).  Whatever a function raises is logged with its
traceback and counted in ``errors``: it never ends fakeiot.
"""

from __future__ import annotations

import importlib
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

FUNCTION_ARN = re.compile(
    r"\Aarn:aws[a-z-]*:lambda:[a-z0-9-]+:[0-9]{12}:function:[A-Za-z0-9_-]{1,64}(?::[A-Za-z0-9_$-]{1,128})?\Z"
)
_TARGET = re.compile(
    r"\A[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*\Z"
)
DROP_LOG_INTERVAL = 10.0
# How long stop() waits for a worker still inside a function beyond its timeout.
STOP_GRACE = 5.0

Function = Callable[[dict[str, Any], Any], Any]


class LambdaError(ValueError):
    """A function map entry or a Lambda action that cannot be used (the message says why)."""


def check_function_arn(arn: Any) -> str:
    """``arn`` if it is a Lambda function ARN (optionally with a version or alias), else LambdaError."""
    if not isinstance(arn, str) or not FUNCTION_ARN.match(arn):
        raise LambdaError(
            f"{str(arn)[:160]!r} is not a Lambda function ARN "
            "(arn:aws:lambda:<region>:<12-digit account>:function:<name>)"
        )
    return arn


def parse_function_map(entries: Iterable[str]) -> dict[str, str]:
    """``ARN=module:function`` entries (each may hold several, comma-separated) as {ARN: target}."""
    functions: dict[str, str] = {}
    for entry in entries:
        for part in (p.strip() for p in entry.split(",")):
            if not part:
                continue
            arn, sep, target = part.partition("=")
            if not sep:
                raise LambdaError(f"--lambda {part[:160]!r}: expected ARN=module:function")
            check_function_arn(arn.strip())
            if not _TARGET.match(target.strip()):
                raise LambdaError(
                    f"--lambda {arn.strip()}: {target.strip()[:120]!r} is not module:function "
                    "(e.g. gateway.processor.lambda_handler:handler)"
                )
            functions[arn.strip()] = target.strip()
    return functions


def resolve(target: str) -> Function:
    """Import ``module:function``; raises LambdaError saying why it cannot be used."""
    module_name, _, name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the named module is reported in one line
        raise LambdaError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise LambdaError(f"{target}: {module_name} has no function {name!r}")
    return function  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Invocation:
    """One event for one function, from one rule."""

    rule: str
    function_arn: str
    event: dict[str, Any]


@dataclass
class LambdaContext:
    """What AWS's Python runtime passes as ``context`` (the attributes handlers use)."""

    invoked_function_arn: str
    deadline: float  # time.monotonic() when the function's time is up
    memory_limit_in_mb: int = 128
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"

    @property
    def function_name(self) -> str:
        return self.invoked_function_arn.split(":")[6]

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"fakeiot/{threading.current_thread().name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


_STOP = object()


class LambdaRunner:
    """Runs the invocations the rules make: a bounded queue and ``concurrency`` worker threads.

    :meth:`start` imports every mapped function (LambdaError if one cannot be
    used) and starts the workers; :meth:`stop` lets them finish what is
    running, drops what waits, and joins them.
    """

    def __init__(
        self,
        functions: Mapping[str, str],
        *,
        concurrency: int = 4,
        queue_size: int = 100,
        timeout: float = 30.0,
    ) -> None:
        if concurrency < 1:
            raise LambdaError(f"--lambda-concurrency must be at least 1, not {concurrency}")
        if queue_size < 0:
            raise LambdaError(f"--lambda-queue must be 0 or more, not {queue_size}")
        if not timeout > 0:
            raise LambdaError(f"--lambda-timeout must be above 0 seconds, not {timeout:g}")
        self.targets = dict(functions)
        self.concurrency = concurrency
        self.timeout = timeout
        self._functions: dict[str, Function] = {}
        # Unbounded as a structure, bounded by admission: submit() counts what is running or waiting.
        self._queue: queue.Queue[Invocation | object] = queue.Queue()
        self._queue_size = queue_size
        self._pending = 0  # running or waiting: at most concurrency + queue_size
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._next_drop_log = 0.0
        self._stopping = False
        self.invoked = 0  # invocations that ran (whatever their outcome)
        self.errors = 0  # raised, or no function mapped for the ARN
        self.timeouts = 0  # ran longer than ``timeout``
        self.throttled = 0  # dropped: ``concurrency`` running and ``queue_size`` waiting

    def start(self) -> None:
        for arn, target in self.targets.items():
            try:
                self._functions[arn] = resolve(target)
            except LambdaError as exc:
                raise LambdaError(f"--lambda {arn}: {exc}") from None
        for n in range(self.concurrency if self.targets else 0):
            # Daemon: a function stuck past its timeout must not keep the process alive; stop() joins.
            thread = threading.Thread(target=self._work, name=f"fakeiot-lambda-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping = True
        while True:  # what waits is dropped: fakeiot is going away
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Invocation):
                with self._lock:
                    self._pending -= 1
        for _ in self._threads:
            self._queue.put(_STOP)
        deadline = time.monotonic() + self.timeout + STOP_GRACE
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("lambda: %s is still inside a function; not waiting for it", thread.name)
        self._threads.clear()

    def submit(self, invocation: Invocation) -> bool:
        """Queue one invocation without blocking; False (counted, logged) when it is dropped."""
        if self._stopping:
            return False
        if invocation.function_arn not in self._functions:
            with self._lock:
                self.errors += 1
            log.error(
                "rule %s: no function for %s (start fakeiot with --lambda %s=module:function)",
                invocation.rule,
                invocation.function_arn,
                invocation.function_arn,
            )
            return False
        with self._lock:
            admitted = self._pending < self.concurrency + self._queue_size
            if admitted:
                self._pending += 1
        if not admitted:
            self._dropped(invocation)
            return False
        self._queue.put_nowait(invocation)
        return True

    def _dropped(self, invocation: Invocation) -> None:
        now = time.monotonic()
        with self._lock:
            self.throttled += 1
            throttled = self.throttled
            loud = now >= self._next_drop_log
            if loud:
                self._next_drop_log = now + DROP_LOG_INTERVAL
        log.log(
            logging.WARNING if loud else logging.DEBUG,
            "rule %s: %s throttled: %d running and %d waiting (%d dropped so far; logged at most "
            "every %g s)",
            invocation.rule,
            invocation.function_arn,
            self.concurrency,
            self._queue_size,
            throttled,
            DROP_LOG_INTERVAL,
        )

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or not isinstance(item, Invocation):
                return
            try:
                self._invoke(item)
            finally:
                with self._lock:
                    self._pending -= 1

    def _invoke(self, invocation: Invocation) -> None:
        function = self._functions[invocation.function_arn]
        began = time.monotonic()
        context = LambdaContext(invocation.function_arn, began + self.timeout)
        try:
            event = json.loads(json.dumps(invocation.event))  # what arrives after serialisation
            function(event, context)
        except (Exception, SystemExit):  # a function's failure is its own: logged, counted
            with self._lock:
                self.errors += 1
            log.exception(
                "rule %s: %s (request %s) raised",
                invocation.rule,
                invocation.function_arn,
                context.aws_request_id,
            )
        elapsed = time.monotonic() - began
        with self._lock:
            self.invoked += 1
            if elapsed > self.timeout:
                self.timeouts += 1
        if elapsed > self.timeout:
            log.error(
                "rule %s: %s (request %s) ran %.1f s, over its %g s timeout (AWS would have "
                "stopped it)",
                invocation.rule,
                invocation.function_arn,
                context.aws_request_id,
                elapsed,
                self.timeout,
            )
