"""Domain errors. The gRPC edge maps each to its status code; nothing else does."""


class AgentError(Exception):
    """Base of errors a caller can act on; the message says what to do."""


class InvalidArgument(AgentError):
    """The request itself is wrong (bad name, empty argv, negative limit...)."""


class NotFound(AgentError):
    """No process with that namespace and name."""


class AlreadyExists(AgentError):
    """A process with that namespace and name already exists."""


class FailedPrecondition(AgentError):
    """The node cannot do this now: a missing privilege or controller, a limit below use."""


class OutOfRange(AgentError):
    """A watch asked for events that are no longer retained."""


class ResourceExhausted(AgentError):
    """A bound of the agent is reached (processes per node, streams per peer): try later."""


class PermissionDenied(AgentError):
    """The caller may not do this: not the identity, or not the ticket, it needs."""
