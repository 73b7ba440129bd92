"""Whether a request's ``Host`` names this machine's loopback: the DNS-rebinding guard.

Without access keys fakeiot binds only loopback addresses and checks no signature, so any
process of this machine may use its API - and so may a web page in this machine's browser that
rebinds its own name to 127.0.0.1: its requests then carry that page's name as ``Host``.
Refusing every ``Host`` that is not ``localhost`` or a loopback address literal closes that
door (the API holds password hashes), as it does for the console.
"""

from __future__ import annotations

import ipaddress


def loopback_host(header: str | None) -> bool:
    """True for ``localhost``, ``127.0.0.1``, ``[::1]`` (any port) and other loopback literals."""
    if not header:
        return False
    if header.startswith("["):
        name, bracket, _ = header[1:].partition("]")
        if not bracket:
            return False
    else:
        name = header.rsplit(":", 1)[0] if header.count(":") == 1 else header
    return is_loopback(name.lower())


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind, or a ``Host`` name) reaches this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
