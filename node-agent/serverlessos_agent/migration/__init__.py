"""Live migration, the agent's part: CRIU, the checkpoint stream, the source's and
the target's steps and how either side finishes."""
