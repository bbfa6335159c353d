"""Importing a list exported from another service (Mailchimp, Substack, listmonk, Buttondown,
any CSV with an email column) into the store's list."""

from mailer.state.imports.formats import FORMATS as FORMATS
from mailer.state.imports.run import Note as Note
from mailer.state.imports.run import Report as Report
from mailer.state.imports.run import run_import as run_import
