"""POST /sns: Amazon SNS delivers SES bounce and complaint notifications here.

Subscribe `https://<site>/sns` to the SNS topic(s) an SES identity or configuration set
publishes Bounce and Complaint notifications to (`mailer serve`, or `mailer.web:app` behind
another server). This route is HTTP only: mailer/feedback/ses.py checks the signature and
reads SES's JSON, and the ledger records what it says as `mailer bounces` records a DSN.

A bad or unsigned message gets 400 and changes nothing. A SubscriptionConfirmation is
verified and logged with its SubscribeURL, never confirmed by itself: confirming subscribes
this endpoint to whatever topic someone pointed at it, and only a confirmed subscription
receives Notifications, so the operator's one manual confirmation (open the URL, or `aws sns
confirm-subscription`) is what decides whose notifications are believed at all.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailer.config import Settings
from mailer.feedback import ses
from mailer.state.ledger import Ledger
from mailer.web import wsgi
from mailer.web.wsgi import HTTPError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

MAX_BODY = 512 * 1024  # SNS messages are at most 256 KB; JSON escaping may add some
NOT_SNS = "This is not an SNS message."


def respond(
    environ: WSGIEnvironment,
    settings: Settings,
    ledger: Callable[[], Ledger],
    log: Callable[[str], None],
) -> tuple[int, str]:
    """(status, text) for one POST: verify, then confirmations are logged and
    notifications recorded; `log` writes one line to the server's error log."""
    body = wsgi.read_body(environ, MAX_BODY, drain=MAX_BODY)
    try:
        message = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HTTPError(400, NOT_SNS) from None
    if not isinstance(message, dict):
        raise HTTPError(400, NOT_SNS)
    header = environ.get("HTTP_X_AMZ_SNS_MESSAGE_TYPE")
    if header is not None and header != message.get("Type"):
        raise HTTPError(400, NOT_SNS)
    try:
        ses.verifier.verify(message)
    except ses.BadMessage as exc:
        log(f"mailer.web: /sns refused a message: {exc}")
        raise HTTPError(400, "The SNS signature is not valid.") from None
    kind, topic = message["Type"], ses.one_line(message.get("TopicArn"), 300)
    if kind == "SubscriptionConfirmation":
        log(
            f"mailer.web: SNS asks to confirm the subscription to {topic}: if it is your SES"
            f" topic, open {ses.one_line(message.get('SubscribeURL'), 2000)}"
        )
        return 200, "subscription not confirmed automatically: see the log\n"
    if kind == "UnsubscribeConfirmation":
        log(f"mailer.web: SNS says this endpoint was unsubscribed from {topic}")
        return 200, "ok\n"
    for line in ses.record(message, ledger(), settings):
        log(f"mailer.web: sns: {line}")
    return 200, "ok\n"
