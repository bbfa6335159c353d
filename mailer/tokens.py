"""Signed unsubscribe tokens: they name a subscriber and a list, and cannot be forged or moved."""

from __future__ import annotations

import hashlib
from functools import lru_cache

from itsdangerous import BadSignature, URLSafeSerializer


class BadToken(ValueError):
    """A token that was not made by us for this list."""


@lru_cache(maxsize=8)
def _serializer(secret: str, list_id: str) -> URLSafeSerializer:
    # The list id is both in the payload and in the salt: a token for one list is void on another.
    return URLSafeSerializer(
        secret,
        salt=f"mailer-unsubscribe:{list_id}",
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def sign(secret: str, list_id: str, email: str) -> str:
    """The unsubscribe token for one address on one list."""
    return str(_serializer(secret, list_id).dumps([list_id, email.lower()]))


def verify(secret: str, list_id: str, token: str) -> str:
    """The address a token was made for, or BadToken."""
    try:
        payload = _serializer(secret, list_id).loads(token)
    except BadSignature:
        raise BadToken("this unsubscribe link is not valid") from None
    if not (isinstance(payload, list) and len(payload) == 2 and payload[0] == list_id):
        raise BadToken("this unsubscribe link is for another list")
    return str(payload[1])
