"""Who the API server says is asking: the front-proxy (request header) authentication
an aggregated API server trusts, configured from the ConfigMap the API server publishes
(kube-system/extension-apiserver-authentication).

A request counts only if it came over TLS with a client certificate of the front-proxy
CA (checked by the TLS layer) whose common name is one the API server allows; then the
user, groups and extras are the headers the API server set. Anyone else's headers are
ignored: a caller who reaches the port directly is Unauthenticated.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

CONFIG_MAP = ("kube-system", "extension-apiserver-authentication")


class Unauthenticated(Exception):
    """Not a request the API server proxied: no front-proxy identity."""


@dataclass(frozen=True)
class Caller:
    user: str
    groups: tuple[str, ...] = ()
    extra: dict[str, list[str]] = field(default_factory=dict)


def _list(raw: bytes | None) -> tuple[str, ...]:
    if not raw:
        return ()
    value = json.loads(raw)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a JSON list of strings, got {raw[:80]!r}")
    return tuple(value)


@dataclass(frozen=True)
class FrontProxy:
    client_ca: bytes  # PEM: the CA of the API server's proxy client certificate
    allowed_names: frozenset[str]  # empty: any certificate of that CA
    username_headers: tuple[str, ...]
    group_headers: tuple[str, ...]
    extra_prefixes: tuple[str, ...]

    @classmethod
    def from_config_map(cls, data: Mapping[str, bytes]) -> FrontProxy | None:
        """None when the API server has no front proxy configured (no aggregation)."""
        ca = data.get("requestheader-client-ca-file")
        if not ca:
            return None
        users = _list(data.get("requestheader-username-headers"))
        if not users:
            raise ValueError("requestheader-username-headers is empty")
        return cls(
            client_ca=ca,
            allowed_names=frozenset(_list(data.get("requestheader-allowed-names"))),
            username_headers=users,
            group_headers=_list(data.get("requestheader-group-headers")),
            extra_prefixes=_list(data.get("requestheader-extra-headers-prefix")),
        )

    def caller(self, common_name: str | None, headers: Iterable[tuple[str, str]]) -> Caller:
        """The user the API server vouches for; `common_name` is that of the verified
        client certificate (None: none was shown)."""
        if common_name is None:
            raise Unauthenticated("no client certificate: only the API server may call")
        if self.allowed_names and common_name not in self.allowed_names:
            raise Unauthenticated(f"client certificate {common_name!r} is not a front proxy")
        pairs = [(k.lower(), v) for k, v in headers]
        user = next(
            (v for h in self.username_headers for k, v in pairs if k == h.lower() and v), ""
        )
        if not user:
            raise Unauthenticated("the front proxy named no user")
        groups = tuple(v for h in self.group_headers for k, v in pairs if k == h.lower())
        extra: dict[str, list[str]] = {}
        for prefix in (p.lower() for p in self.extra_prefixes):
            for k, v in pairs:
                if k.startswith(prefix) and len(k) > len(prefix):
                    key = urllib.parse.unquote(k[len(prefix) :]).lower()
                    extra.setdefault(key, []).append(v)
        return Caller(user, groups, extra)
