"""Credentials in service URLs (REDIS_URL, CLICKHOUSE_URL): split them off, and mask them.

`redis://:password@host:6379/0`, `rediss://user:password@host:6380/0`,
`https://user:password@host:8443`: the password is percent-decoded for use (a password with
`@`, `:` or `/` must be percent-encoded in the URL) and shown as `***` wherever the URL is
printed or logged. Vendor-free, so every room may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

MASK = "***"

#: `scheme://user:password@` in free text (error messages that quote a URL).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@\s]*)@")


@dataclass(frozen=True, slots=True)
class UrlCredentials:
    """A URL without its credentials, and the credentials (decoded). `password` never prints."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def split_credentials(url: str) -> UrlCredentials:
    """`scheme://user:pass@host:port/path?query` -> the URL without `user:pass@`, user, password."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return UrlCredentials(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return UrlCredentials(bare, unquote(user) or None, unquote(password) if colon else None)


def mask_url(url: str | None) -> str:
    """The URL as it may be shown: its password replaced by `***` (user, host, path kept)."""
    if not url:
        return ""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    netloc = f"{user}:{MASK}@{hostport}" if colon else f"{user}@{hostport}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` with every URL password masked and each of `secrets` (and its percent-encoded
    form, as it stands in a URL) replaced by `***`: for error messages quoting a URL or a value."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        out = out.replace(secret, MASK).replace(quote(secret, safe=""), MASK)
    return out
