"""The log API over HTTPS (aiohttp): discovery for anyone, a process's log for a caller
the API server vouches for (front_proxy) and RBAC allows (access), streamed as it comes
(reader). Only translation lives here."""

from __future__ import annotations

import logging
import ssl
from typing import Any

from aiohttp import web

from . import discovery
from .access import LogAccess
from .discovery import GROUP, RESOURCE, SUBRESOURCE, VERSION
from .front_proxy import FrontProxy, Unauthenticated
from .reader import LogError, LogRequest, ProcessLogs

log = logging.getLogger(__name__)
LOG_PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{{namespace}}/{RESOURCE}/{{name}}/{SUBRESOURCE}"


def _failure(code: int, message: str) -> web.Response:
    return web.json_response(discovery.status(code, message), status=code)


def _common_name(request: web.Request) -> str | None:
    """The verified client certificate's CN (the TLS layer checked it against the
    front-proxy CA), None if none was shown."""
    transport = request.transport
    cert: Any = transport.get_extra_info("peercert") if transport is not None else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def _log_request(request: web.Request) -> LogRequest:
    query = request.query
    follow = query.get("follow", "false").lower()
    if follow not in ("true", "false", "1", "0"):
        raise LogError(400, f"follow must be true or false, got {query['follow']!r}")
    tail = query.get("tailLines", "0")
    if not tail.isdigit() or int(tail) > 1 << 31:
        raise LogError(400, f"tailLines must be a non-negative integer, got {tail!r}")
    return LogRequest(
        namespace=request.match_info["namespace"],
        name=request.match_info["name"],
        tail_lines=int(tail),
        follow=follow in ("true", "1"),
    )


class LogServer:
    def __init__(self, front_proxy: FrontProxy, access: LogAccess, logs: ProcessLogs) -> None:
        self.front_proxy = front_proxy
        self.access = access
        self.logs = logs
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        documents = {
            "/apis": discovery.group_list(),
            f"/apis/{GROUP}": discovery.group(),
            f"/apis/{GROUP}/{VERSION}": discovery.resource_list(),
        }
        for path, document in documents.items():
            app.router.add_get(path, self._document(document))
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get(LOG_PATH, self._log)
        return app

    async def start(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port, ssl_context=context).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @staticmethod
    def _document(document: discovery.Document) -> Any:
        async def serve(request: web.Request) -> web.Response:
            return web.json_response(document)

        return serve

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _log(self, request: web.Request) -> web.StreamResponse:
        try:
            caller = self.front_proxy.caller(_common_name(request), request.headers.items())
        except Unauthenticated as exc:
            return _failure(401, str(exc))
        try:
            wanted = _log_request(request)
            denied = await self.access.check(caller, wanted.namespace, wanted.name)
            if denied:
                return _failure(403, denied)
            stream = await self.logs.open(wanted)
        except LogError as exc:
            return _failure(exc.code, str(exc))
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        try:
            await response.prepare(request)
            async for chunk in stream.chunks():
                await response.write(chunk)
        except LogError as exc:  # after the first byte: the stream just ends, as pods/log's
            log.info("log of %s/%s ended: %s", wanted.namespace, wanted.name, exc)
        except (ConnectionResetError, OSError):
            pass  # the reader went away
        finally:
            stream.close()
        return response
