"""Text a client sent, fit for a log line.

An HTTP request line may hold control bytes (ESC, BEL, the C1 controls: not whitespace, so
``http.server`` keeps them in the path).  Logged as they are, a request could recolour, retitle
or clear the terminal of whoever tails the log; :func:`loggable` shows them as ``\\xNN``.
"""

from __future__ import annotations

_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), *range(0x7F, 0xA0)]}


def loggable(text: str, limit: int = 80) -> str:
    """``text`` (a request's path, say) cut to ``limit`` characters, control characters escaped."""
    return text[:limit].translate(_CONTROL)
