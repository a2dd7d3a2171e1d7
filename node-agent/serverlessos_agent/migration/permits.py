"""Whether a checkpoint may leave this node, or be taken in by it: with mutual TLS,
only as the operator's ticket for that migration says (serverlessos.auth.tickets).

The source sends a process's checkpoint only under a ticket that names this node as
its source, that process (namespace, name, owner uid), and the target it is dialled
as. The target takes one only from the ticket's source (the sender's certificate),
for itself, for the process the ticket names. An agent without TLS (--insecure) has
no identities to check and checks nothing.
"""

from __future__ import annotations

from serverlessos.agent.v1alpha1 import agent_pb2 as pb
from serverlessos.auth.identity import Identity
from serverlessos.auth.pki import load_cert
from serverlessos.auth.tickets import Ticket, TicketError

from ..auth.credentials import TlsFiles
from ..errors import PermissionDenied
from ..records import ProcessRecord


class Permits:
    def __init__(self, node_name: str, tls: TlsFiles | None) -> None:
        self.node_name = node_name
        self.tls = tls

    def _ticket(self, token: bytes) -> Ticket:
        assert self.tls is not None
        try:
            return Ticket.verify(token, load_cert(self.tls.current.ca))
        except TicketError as exc:
            raise PermissionDenied(f"no migration without the operator's ticket: {exc}") from None

    def to_send(
        self, record: ProcessRecord, migration_id: str, target_node: str, token: bytes
    ) -> Ticket | None:
        """The ticket under which this process may be sent to `target_node` (None: no
        TLS here, nothing to check)."""
        if self.tls is None:
            return None
        ticket = self._ticket(token)
        wanted = (migration_id, self.node_name, target_node, record.ref.namespace, record.ref.name)
        have = (ticket.migration_id, ticket.source, ticket.target, ticket.namespace, ticket.name)
        if have != wanted or ticket.process_uid != record.spec.owner_uid:
            raise PermissionDenied(
                f"the ticket is for {ticket.namespace}/{ticket.name} (uid {ticket.process_uid}) "
                f"from {ticket.source} to {ticket.target} in {ticket.migration_id}, not this "
                f"checkpoint of {record.ref} to {target_node or '(no target node)'}"
            )
        return ticket

    def to_receive(self, header: pb.CheckpointHeader, sender: Identity | None) -> None:
        """Raises unless the sender, this node and the process are the ticket's."""
        if self.tls is None:
            return
        ticket = self._ticket(header.ticket)
        spec = header.process.spec
        if sender is None or sender.kind != "node" or sender.name != ticket.source:
            raise PermissionDenied(
                f"the checkpoint comes from {sender}, not from the ticket's source {ticket.source}"
            )
        wanted = (
            header.migration_id,
            ticket.source,
            self.node_name,
            spec.owner.namespace,
            spec.name,
        )
        have = (
            ticket.migration_id,
            header.source_node,
            ticket.target,
            ticket.namespace,
            ticket.name,
        )
        if have != wanted or ticket.process_uid != spec.owner.uid:
            raise PermissionDenied(
                f"the ticket is for {ticket.namespace}/{ticket.name} to {ticket.target} in "
                f"{ticket.migration_id}; this checkpoint is {spec.owner.namespace}/{spec.name} "
                f"to {self.node_name} in {header.migration_id}"
            )
