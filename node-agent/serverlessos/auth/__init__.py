"""Who is who on ServerlessOS's channels, shared by both wings: identities (identity.py),
the cluster CA and the certificates it issues (pki.py), and migration tickets
(tickets.py). No I/O here: the wings keep the keys where they belong."""
