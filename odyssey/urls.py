"""The one check for URLs that Odyssey fetches (issue 26: SSRF through URLs a request or a document list names).

Two kinds of URL can reach a fetch:

* endpoints the project's owner wrote in odyssey.yaml (``evaluate.openai.base_url``, ``align.judge.endpoint``,
  ``tracking.mlflow.uri``): trusted to name any host, loopback included (``odyssey serve`` on 127.0.0.1 is the
  common case), but only over http(s). The clients made for them follow no redirect
  (``engines.openai_compat.client``), so an endpoint cannot send Odyssey, and the key it sends, elsewhere.
* a URL that a request body or a document list names. Odyssey fetches none today: a chat content part that is
  not text is a 400, and ``odyssey rag ingest`` reads local files only, refusing a URL (``refuse_url``). Code
  that fetches one must call ``check_url(..., allow_private=False)``: the host is resolved as the socket layer
  resolves it (so ``http://2130706433/``, ``http://0x7f.1/``, ``http://0177.0.0.1/`` and names that resolve to
  private addresses are caught) and every address must be public, unless the user opts in. It then has to
  connect to the address checked (a second lookup could answer differently: DNS rebinding), and check each
  redirect's target again.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from odyssey.errors import OdysseyError

SCHEMES = ("http", "https")
# scheme:/ with a scheme of two or more letters: ``http://x`` and also ``http:/x``, what ``Path("http://x")``
# (a CLI argument typed as a path) makes of it; a Windows drive (``C:/data``) has one letter.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def looks_like_url(text: str) -> bool:
    """``scheme://...`` (or ``scheme:/...``), as opposed to a file path."""
    return bool(_SCHEME.match(str(text)))


def check_url(url: str, where: str, *, allow_private: bool = True, schemes: tuple[str, ...] = SCHEMES) -> str:
    """``url`` unchanged when its scheme is allowed, it names a host and (``allow_private=False``) every
    address the host resolves to is public; an OdysseyError naming ``where`` (the field) otherwise."""
    if not isinstance(url, str) or any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise OdysseyError(f"{where}: {url!r} is not a URL (it holds spaces or control characters)")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise OdysseyError(
            f"{where}: the scheme {scheme + '://' if scheme else '(none)'} of {url} is not allowed",
            hint=f"use a {' or '.join(s + '://' for s in schemes)} URL, e.g. http://127.0.0.1:8000/v1",
        )
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise OdysseyError(f"{where}: {url} is not a valid URL ({exc})") from None
    if not host and scheme in SCHEMES:  # file:///x and sqlite:///x (MLflow stores) have none
        raise OdysseyError(f"{where}: {url} names no host", hint="e.g. http://127.0.0.1:8000/v1")
    if not allow_private:
        for address in resolve(host, port or (443 if scheme == "https" else 80), where):
            kind = private_kind(address)
            if kind:
                raise OdysseyError(
                    f"{where}: {url} resolves to {address}, a {kind} address, which Odyssey does not fetch "
                    "for a URL it was given",
                    hint="use a public address, or allow private ones explicitly where this URL is configured",
                )
    return url


def resolve(host: str, port: int, where: str) -> list[str]:
    """Every address ``host`` resolves to, as the socket layer sees it (inet_aton's decimal, hex and octal forms)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise OdysseyError(f"{where}: the host {host!r} cannot be resolved ({exc})") from None
    return sorted({info[4][0].split("%")[0] for info in infos})


def private_kind(address: str) -> str | None:
    """Why ``address`` is not a public one ('loopback', 'link-local (cloud metadata)', ...), or None."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    checks = (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local (cloud metadata)", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved or not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def refuse_url(text: str, where: str, what: str) -> None:
    """A URL where only local files are read: an error that says so, before anything is fetched."""
    if looks_like_url(text):
        raise OdysseyError(
            f"{where}: {text} is a URL; {what} reads local files only and fetches nothing",
            hint="download the documents first and give their folder",
        )
