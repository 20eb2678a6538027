"""Which Secrets a source may send as headers, and to which hosts.

The operator can read the Secrets its installer named; a tenant who may
only create ProxyRefreshes cannot. Without a rule, naming such a Secret in
``headersSecretRef`` would make the operator deliver its values to any URL
the tenant chooses. So a Secret is usable as source credentials only when
its owner opted in (label ``proxyrefresh.dev/source-credentials: "true"``)
and listed the hosts its headers may go to (annotation
``proxyrefresh.dev/allowed-hosts: "lists.example.com, *.example.org"``).
The headers then go to those hosts only, and never across a redirect to
another host.

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


@dataclass(frozen=True)
class SourceCredentials:
    """Headers a source may send, bound to the hosts they may reach."""

    secret: str
    hosts: tuple[str, ...]
    headers: dict[str, str] = field(repr=False)

    def headers_for(self, url: str, first_url: str) -> dict[str, str]:
        """The headers for one request of a fetch that started at ``first_url``:
        none once a redirect left the first host (or dropped TLS)."""
        hop, first = urlsplit(url), urlsplit(first_url)
        if (hop.hostname or "").lower() != (first.hostname or "").lower():
            return {}
        if first.scheme == "https" and hop.scheme != "https":
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
    host = urlsplit(url).hostname or ""
    if not host_allowed(host, hosts):
        raise CredentialsRefused(
            f"Secret {name} does not allow its headers to be sent to {host} "
            f"(annotation {c.ANNOTATION_ALLOWED_HOSTS})"
        )
    return SourceCredentials(name, hosts, dict(secret.get("data") or {}))
