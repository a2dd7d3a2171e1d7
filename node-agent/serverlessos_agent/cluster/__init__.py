"""The agent's optional parts that talk to a Kubernetes API server (the only ones that
import `kubernetes`; the daemon loads them only when the agent has a kubeconfig or runs
in a pod): its ServerlessNode (registration.py) and its certificate (certificates.py)."""
