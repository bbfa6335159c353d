"""The newsletter on the web: which issues are public, their pages, the index, the feed.

`mailer publish` writes them as a static site (site.py); `mailer serve` answers with the same
pages (mailer/web/routes.py calls the same code).
"""
