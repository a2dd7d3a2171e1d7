"""What both wings of ServerlessOS share, and nothing else.

The node agent (`serverlessos_agent`) and the operator (`serverlessos_operator`)
import each other's code only through this package:

- `agent.v1alpha1`: the agent's gRPC API (generated from node-agent/proto by
  `make proto`; the operator is its main client), and `criu`: the part of CRIU's
  RPC protocol the agent speaks (generated too);
- `quantity`: Kubernetes quantities ("500m", "256Mi"), as resource.Quantity has them;
- `files`: crash-safe (atomic) file writes;
- `metrics_server`: the Prometheus /metrics HTTP server both wings run;
- `table`: the plain-text tables both CLIs print;
- `capabilities`: Linux capability names (the CRD's enum, the agent's confinement);
- `auth`: identities, the cluster CA, migration tickets and TLS contexts.
"""
