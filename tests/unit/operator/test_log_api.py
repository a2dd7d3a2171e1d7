"""The log API's pure parts: the front proxy's configuration and who it says calls."""

from __future__ import annotations

import pytest
from serverlessos_operator.logs import discovery
from serverlessos_operator.logs.front_proxy import FrontProxy, Unauthenticated

CONFIG = {
    "requestheader-client-ca-file": b"-----BEGIN CERTIFICATE-----\n...",
    "requestheader-allowed-names": b"[]",
    "requestheader-username-headers": b'["X-Remote-User"]',
    "requestheader-group-headers": b'["X-Remote-Group"]',
    "requestheader-extra-headers-prefix": b'["X-Remote-Extra-"]',
}


def test_no_front_proxy_means_no_log_api() -> None:
    assert FrontProxy.from_config_map({}) is None
    assert FrontProxy.from_config_map({"client-ca-file": b"x"}) is None


def test_a_broken_configuration_is_an_error_not_an_open_door() -> None:
    with pytest.raises(ValueError, match="username-headers is empty"):
        FrontProxy.from_config_map({**CONFIG, "requestheader-username-headers": b"[]"})
    with pytest.raises(ValueError, match="JSON list of strings"):
        FrontProxy.from_config_map({**CONFIG, "requestheader-allowed-names": b'{"a": 1}'})


def test_any_name_of_the_ca_when_none_are_listed_and_headers_any_case() -> None:
    proxy = FrontProxy.from_config_map(CONFIG)
    assert proxy is not None
    caller = proxy.caller(
        "whoever",
        [
            ("x-remote-user", "alice"),
            ("X-Remote-Group", "a"),
            ("X-REMOTE-GROUP", "b"),
            ("X-Remote-Extra-Scopes", "one"),
            ("X-Remote-Extra-Scopes", "two"),
            ("X-Remote-Extra-", "empty key ignored"),
        ],
    )
    assert (caller.user, caller.groups, caller.extra) == (
        "alice",
        ("a", "b"),
        {"scopes": ["one", "two"]},
    )
    with pytest.raises(Unauthenticated):
        proxy.caller(None, [("X-Remote-User", "alice")])


def test_errors_are_kubernetes_statuses() -> None:
    status = discovery.status(403, "no")
    assert status["reason"] == "Forbidden" and status["code"] == 403
    assert discovery.group()["preferredVersion"]["groupVersion"] == "logs.serverlessos.io/v1alpha1"
