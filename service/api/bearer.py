"""The one bearer-token check of the guarded routes (admin, feedback)."""

import hmac

from litestar.connection import ASGIConnection
from pydantic import SecretStr


def bearer_matches(connection: ASGIConnection, token: SecretStr) -> bool:
    """``Authorization: Bearer <token>`` was sent, compared in constant time."""
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)
