"""ServerlessOS operator (kopf). Not built yet: see the operator issue."""
