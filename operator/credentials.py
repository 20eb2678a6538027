"""Which Secrets a source may send as headers, and to which hosts.

The operator can read the Secrets its installer named; a tenant who may
only create ProxyRefreshes cannot. Without a rule, naming such a Secret in
``headersSecretRef`` would make the operator deliver its values to any URL
the tenant chooses. So a Secret is usable as source credentials only when
its owner opted in (label ``proxyrefresh.dev/source-credentials: "true"``)
and listed where its headers may go (annotation
``proxyrefresh.dev/allowed-hosts: "lists.example.com, *.example.org,
http://mirror.example.net:8080"``): a bare host name (or ``*.domain``)
means https on port 443; any other scheme or port is named as an origin.
The headers then go to those origins only, and never across a redirect to
another host, another port, or from https to http.

Everything here is pure; messages name the rule and the Secret, never its data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from proxyrefresh import constants as c


class CredentialsRefused(ValueError):
    """The Secret may not be used for this source; the message names the rule."""


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """``host`` matches an exact name or a ``*.domain`` pattern (one or more labels)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def parse_hosts(text: str) -> tuple[str, ...]:
    return tuple(h for h in (part.strip() for part in text.replace("\n", ",").split(",")) if h)


DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL, the port defaulted by the scheme; an
    entry without a scheme is a host (or ``*.domain``) served over https."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    scheme = parts.scheme.lower()
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        port = -1  # not a port: matches nothing
    return scheme, (parts.hostname or "").rstrip("."), port


def origin_allowed(url: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``url``'s scheme, host and port are among ``patterns``."""
    scheme, host, port = origin(url)
    for pattern in patterns:
        p_scheme, p_host, p_port = origin(pattern)
        if (scheme, port) == (p_scheme, p_port) and host_allowed(host, (p_host,)):
            return True
    return False


@dataclass(frozen=True)
class SourceCredentials:
    """Headers a source may send, bound to the hosts they may reach."""

    secret: str
    hosts: tuple[str, ...]
    headers: dict[str, str] = field(repr=False)

    def headers_for(self, url: str, first_url: str) -> dict[str, str]:
        """The headers for one request of a fetch that started at ``first_url``:
        none once a redirect left the first origin (host, port, or TLS)."""
        if origin(url) != origin(first_url) or not origin_allowed(url, self.hosts):
            return {}
        return dict(self.headers)


def from_secret(secret: dict[str, Any], url: str) -> SourceCredentials:
    """The credentials in ``secret`` (metadata and decoded data) for a source
    at ``url``, or CredentialsRefused naming the rule it breaks."""
    meta = secret.get("metadata") or {}
    name = str(meta.get("name") or "?")
    labels = meta.get("labels") or {}
    if labels.get(c.LABEL_SOURCE_CREDENTIALS) != "true":
        raise CredentialsRefused(
            f"Secret {name} has not opted in as source credentials "
            f'(label {c.LABEL_SOURCE_CREDENTIALS}: "true")'
        )
    hosts = parse_hosts((meta.get("annotations") or {}).get(c.ANNOTATION_ALLOWED_HOSTS) or "")
    if not origin_allowed(url, hosts):
        scheme, host, port = origin(url)
        raise CredentialsRefused(
            f"Secret {name} does not allow its headers to be sent to {scheme}://{host}:{port} "
            f"(annotation {c.ANNOTATION_ALLOWED_HOSTS}: a bare host name means https on "
            "port 443; name any other as scheme://host:port)"
        )
    return SourceCredentials(name, hosts, dict(secret.get("data") or {}))
