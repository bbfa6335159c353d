"""Signed tokens: unsubscribe tokens name a subscriber and a list, and cannot be forged or
moved; confirmation tokens (the signup form's double opt-in) also carry when they were made,
and expire."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib
from functools import lru_cache

from itsdangerous import BadSignature, SignatureExpired, URLSafeSerializer, URLSafeTimedSerializer


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


@lru_cache(maxsize=8)
def _key(secret: str, list_id: str) -> bytes:
    """itsdangerous's derived key ("django-concat") for this list, computed once."""
    salt = f"mailer-unsubscribe:{list_id}".encode()
    return hashlib.sha256(salt + b"signer" + secret.encode()).digest()


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign(secret: str, list_id: str, email: str) -> str:
    """The unsubscribe token for one address on one list.

    Byte for byte what `_serializer(...).dumps(...)` makes (a test holds them equal), in a
    third of the time: this runs once per message, and itsdangerous derives its key again
    on every call. Tokens are still read by itsdangerous (`verify`).
    """
    payload = json.dumps([list_id, email.lower()], ensure_ascii=False, separators=(",", ":"))
    data = payload.encode()
    compressed = zlib.compress(data)
    value = b"." + _b64(compressed) if len(compressed) < len(data) - 1 else _b64(data)
    signature = hmac.digest(_key(secret, list_id), value, "sha256")
    return (value + b"." + _b64(signature)).decode("ascii")


def verify(secret: str, list_id: str, token: str) -> str:
    """The address a token was made for, or BadToken."""
    try:
        payload = _serializer(secret, list_id).loads(token)
    except BadSignature:
        raise BadToken("this unsubscribe link is not valid") from None
    if not (isinstance(payload, list) and len(payload) == 2 and payload[0] == list_id):
        raise BadToken("this unsubscribe link is for another list")
    return str(payload[1])


class ExpiredToken(BadToken):
    """A confirmation token made by us, but longer ago than it may be used."""


@lru_cache(maxsize=8)
def _confirm_serializer(secret: str, list_id: str) -> URLSafeTimedSerializer:
    # Its own salt: an unsubscribe token is no confirmation token, nor the other way round.
    return URLSafeTimedSerializer(
        secret,
        salt=f"mailer-confirm:{list_id}",
        signer_kwargs={"digest_method": hashlib.sha256},
    )


def sign_confirm(secret: str, list_id: str, email: str) -> str:
    """The token of a confirmation link: this address, this list, now."""
    return str(_confirm_serializer(secret, list_id).dumps([list_id, email.lower()]))


def verify_confirm(secret: str, list_id: str, token: str, max_age: float) -> str:
    """The address a confirmation token was made for; ExpiredToken or BadToken."""
    try:
        payload = _confirm_serializer(secret, list_id).loads(token, max_age=int(max_age))
    except SignatureExpired:
        raise ExpiredToken("this confirmation link has expired") from None
    except BadSignature:
        raise BadToken("this confirmation link is not valid") from None
    if not (isinstance(payload, list) and len(payload) == 2 and payload[0] == list_id):
        raise BadToken("this confirmation link is for another list")
    return str(payload[1])
