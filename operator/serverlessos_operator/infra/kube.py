"""The operator's own Kubernetes calls (kopf does its watches; these are the writes).

The synchronous official client, run in threads, behind a small typed surface.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import os
from typing import Any, Protocol, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.meta import GROUP, VERSION

PROCESSES = "serverlessprocesses"
NODES = "serverlessnodes"
MIGRATIONS = "processmigrations"
CGROUPS = "clustercgroups"


def load_client(pool_size: int = 32) -> client.ApiClient:
    """In-cluster or KUBECONFIG credentials, with a connection pool as large as the
    thread pool that uses it: a smaller pool drops connections under load, and
    every new one costs the API server a TLS handshake."""
    configuration = client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


class StatusWriter(Protocol):
    """Status writes of our kinds (Kube; an in-memory stand-in in unit tests)."""

    async def patch_process_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> bool: ...

    async def patch_migration_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> bool: ...

    async def patch_cgroup_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> bool: ...

    async def create_migration(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]: ...


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api_client = api_client or load_client()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)
        self.apps = client.AppsV1Api(self.api_client)
        self.certificates = client.CertificatesV1Api(self.api_client)
        self.authorization = client.AuthorizationV1Api(self.api_client)
        self.registration = client.ApiregistrationV1Api(self.api_client)

    async def patch_process_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        """Merge-patch status; False if the object is gone."""
        return await self._patch_status(PROCESSES, namespace, name, status)

    async def patch_migration_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> bool:
        return await self._patch_status(MIGRATIONS, namespace, name, status)

    async def patch_cgroup_status(self, namespace: str, name: str, status: dict[str, Any]) -> bool:
        return await self._patch_status(CGROUPS, namespace, name, status)

    async def create_migration(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            await asyncio.to_thread(
                self.custom.create_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                MIGRATIONS,
                body,
            ),
        )

    async def _patch_status(
        self, plural: str, namespace: str, name: str, status: dict[str, Any]
    ) -> bool:
        try:
            await asyncio.to_thread(
                self.custom.patch_namespaced_custom_object_status,
                GROUP,
                VERSION,
                namespace,
                plural,
                name,
                {"status": status},
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def read_secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's data, decoded; None if there is none of that name."""
        try:
            secret = await asyncio.to_thread(self.core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}

    async def read_config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A ConfigMap's data and binaryData; None if there is none of that name."""
        try:
            found = await asyncio.to_thread(self.core.read_namespaced_config_map, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: v.encode() for k, v in (found.data or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (found.binary_data or {}).items()})
        return data

    async def create_secret(self, namespace: str, name: str, data: dict[str, bytes]) -> bool:
        """False if one of that name exists already."""
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            type="Opaque",
            data={k: base64.b64encode(v).decode() for k, v in data.items()},
        )
        try:
            await asyncio.to_thread(self.core.create_namespaced_secret, namespace, body)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        """Server-side apply of a ConfigMap's data (created when missing)."""
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        await asyncio.to_thread(
            self.core.patch_namespaced_config_map,
            name,
            namespace,
            body,
            field_manager="serverlessos-operator",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def review_access(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A SubjectAccessReview of `spec` (user, groups, extra, resourceAttributes, as
        in the API): its status's allowed, reason and evaluationError."""
        attributes = spec["resourceAttributes"]
        body = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=spec["user"],
                groups=spec.get("groups") or None,
                extra=spec.get("extra") or None,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=attributes["namespace"],
                    verb=attributes["verb"],
                    group=attributes["group"],
                    resource=attributes["resource"],
                    subresource=attributes.get("subresource"),
                    name=attributes.get("name"),
                ),
            )
        )
        result = await asyncio.to_thread(self.authorization.create_subject_access_review, body)
        status = result.status
        if status is None:
            return {"allowed": False, "reason": "the review returned no status"}
        return {
            "allowed": bool(status.allowed),
            "reason": status.reason or "",
            "evaluationError": status.evaluation_error or "",
        }

    async def set_apiservice_ca(self, name: str, ca_pem: bytes) -> bool:
        """The CA the API server checks an APIService's serving certificate with;
        False if there is no APIService of that name."""
        patch = {"spec": {"caBundle": base64.b64encode(ca_pem).decode()}}
        try:
            await asyncio.to_thread(self.registration.patch_api_service, name, patch)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def decide_certificate(
        self, name: str, approve: bool, reason: str, message: str, certificate: bytes
    ) -> None:
        """Approve (and sign with `certificate`) or deny a CertificateSigningRequest."""

        def act() -> None:
            csr = self.certificates.read_certificate_signing_request(name)
            condition = client.V1CertificateSigningRequestCondition(
                type="Approved" if approve else "Denied",
                status="True",
                reason=reason,
                message=message,
            )
            csr.status = csr.status or client.V1CertificateSigningRequestStatus()
            csr.status.conditions = [*(csr.status.conditions or []), condition]
            csr = self.certificates.replace_certificate_signing_request_approval(name, csr)
            if approve:
                assert csr.status is not None  # the approval's reply carries it
                csr.status.certificate = base64.b64encode(certificate).decode()
                self.certificates.replace_certificate_signing_request_status(name, csr)

        await asyncio.to_thread(act)

    async def post_event(
        self, involved: dict[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about an object (what `kubectl describe` and `get events` show)."""
        meta = involved["metadata"]
        now = datetime.datetime.now(datetime.UTC)
        event = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}."),
            involved_object=client.V1ObjectReference(
                api_version=involved["apiVersion"],
                kind=involved["kind"],
                name=meta["name"],
                namespace=meta["namespace"],
                uid=meta["uid"],
            ),
            type=type_,
            reason=reason,
            message=message[:1024],
            first_timestamp=now,
            last_timestamp=now,
            count=1,
            source=client.V1EventSource(component="serverlessos-operator"),
            reporting_component="serverlessos-operator",
            reporting_instance=os.environ.get("HOSTNAME", "serverlessos-operator"),
        )
        # A cluster-scoped object's Events live in default, as a Node's do.
        namespace = meta["namespace"] or "default"
        await asyncio.to_thread(self.core.create_namespaced_event, namespace, event)

    async def list_processes(self) -> list[dict[str, Any]]:
        return await self._list(PROCESSES)

    async def list_serverless_nodes(self) -> list[dict[str, Any]]:
        return await self._list(NODES)

    async def list_migrations(self) -> list[dict[str, Any]]:
        return await self._list(MIGRATIONS)

    async def list_cgroups(self) -> list[dict[str, Any]]:
        return await self._list(CGROUPS)

    async def _list(self, plural: str) -> list[dict[str, Any]]:
        result = cast(
            dict[str, Any],
            await asyncio.to_thread(self.custom.list_cluster_custom_object, GROUP, VERSION, plural),
        )
        return list(result.get("items", []))

    async def apply_daemonset(self, manifest: dict[str, Any], field_manager: str) -> None:
        """Server-side apply: the operator owns the fields it sets, and only those."""
        meta = manifest["metadata"]
        await asyncio.to_thread(
            self.apps.patch_namespaced_daemon_set,
            meta["name"],
            meta["namespace"],
            manifest,
            field_manager=field_manager,
            force=True,
            _content_type="application/apply-patch+yaml",
        )
