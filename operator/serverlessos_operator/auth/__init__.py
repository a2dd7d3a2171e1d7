"""The operator's part of identity: the cluster CA it keeps (ca_store.py), its own
credentials to the agents (credentials.py), and the agents' certificates it signs
(signer.py)."""
