"""Kopf handlers: translate watch events and lifecycle hooks into calls on the operator
(app.Operator, kept in kopf's memo). Nothing here decides anything. One module per
kind; importing this package registers them all."""

from . import certificates, clustercgroups, lifecycle, migrations, nodes, processes

__all__ = ["certificates", "clustercgroups", "lifecycle", "migrations", "nodes", "processes"]
