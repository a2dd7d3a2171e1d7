"""Migration tickets (serverlessos.auth.tickets): what the migration controller hands
the source agent, signed with the cluster CA's key."""

from __future__ import annotations

from serverlessos.auth.pki import CA
from serverlessos.auth.tickets import Ticket


class MigrationTickets:
    def __init__(self, ca: CA | None = None) -> None:
        self.ca = ca

    def __call__(
        self,
        *,
        migration_id: str,
        namespace: str,
        name: str,
        process_uid: str,
        source: str,
        target: str,
    ) -> bytes:
        """A migration's ticket; empty without a CA (agents without TLS ask for none)."""
        if self.ca is None:
            return b""
        return Ticket.issue(
            self.ca.key,
            migration_id=migration_id,
            namespace=namespace,
            name=name,
            process_uid=process_uid,
            source=source,
            target=target,
        )
