"""A process's environment, its valueFrom variables read from Secrets and ConfigMaps of
its namespace when it starts (as the kubelet does for a container: later changes to
them reach the process at its next start elsewhere, not while it runs).

The values go to the agent in the StartProcess request and nowhere else: not into the
status, not into Events or logs (errors name the variable and the object, never a
value), and the agent never echoes them back.
"""

from __future__ import annotations

from typing import Protocol

from ..api.v1alpha1 import EnvVar, KeySelector


class EnvSource(Protocol):
    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None: ...

    async def read_config_map(self, namespace: str, name: str) -> dict[str, bytes] | None: ...


class EnvNotReady(Exception):
    """A variable's Secret or ConfigMap (or its key) is missing: the process waits."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def resolve(source: EnvSource, namespace: str, env: list[EnvVar]) -> dict[str, str]:
    out: dict[str, str] = {}
    for var in env:
        if var.value_from is None:
            out[var.name] = var.value
            continue
        secret, config = var.value_from.secret_key_ref, var.value_from.config_map_key_ref
        if secret is not None:
            data = await source.read_secret(namespace, secret.name)
            value = _pick(var, "Secret", secret, data)
        else:
            assert config is not None  # the CRD asks for exactly one
            data = await source.read_config_map(namespace, config.name)
            value = _pick(var, "ConfigMap", config, data)
        if value is not None:
            out[var.name] = value
    return out


def _pick(var: EnvVar, kind: str, ref: KeySelector, data: dict[str, bytes] | None) -> str | None:
    if data is None or ref.key not in data:
        if ref.optional:
            return None
        missing = (
            f"{kind} {ref.name!r}" if data is None else f"key {ref.key!r} in {kind} {ref.name!r}"
        )
        raise EnvNotReady(
            f"{kind}NotFound", f"variable {var.name} waits for {missing} (in this namespace)"
        )
    try:
        return data[ref.key].decode()
    except UnicodeDecodeError:
        raise EnvNotReady(
            "InvalidEnv", f"variable {var.name}: key {ref.key!r} of {kind} {ref.name!r} is not text"
        ) from None
