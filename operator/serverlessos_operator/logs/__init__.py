"""The log API: `serverlessprocesses/log` of API group logs.serverlessos.io, served by
the operator behind the API server (an APIService), so reading a process's output is
authenticated and authorized by Kubernetes like `pods/log` and needs no route to the
agents. Module map: discovery (the group's documents), front_proxy (who the API server
says is asking), access (RBAC, by SubjectAccessReview), reader (the agent's stream),
server (HTTP), serving (the certificate the API server checks), service (wiring)."""
