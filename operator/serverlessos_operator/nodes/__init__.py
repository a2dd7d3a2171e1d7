"""The operator's model of nodes: each ServerlessNode (its agent) and Node (labels, taints)."""
