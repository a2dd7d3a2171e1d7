"""The Prometheus /metrics HTTP server, in a thread beside the asyncio loop."""

from __future__ import annotations

import socketserver
import threading
from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, MetricsHandler


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> int:
    """Serve /metrics in a thread; returns the bound port (port 0 picks one)."""
    server = _MetricsServer((host, port), MetricsHandler.factory(registry))
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return int(server.server_address[1])


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the address's FQDN: a reverse DNS query that
        # stalls for seconds on a node (or network namespace) without a resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
