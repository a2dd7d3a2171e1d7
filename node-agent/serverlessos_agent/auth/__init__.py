"""Who may talk to this agent: its TLS credentials (credentials.py) and which identity may
call which RPC (authorization.py)."""
