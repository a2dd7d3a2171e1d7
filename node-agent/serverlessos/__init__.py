"""Generated protobuf and gRPC code of the node agent (see hack/gen_proto.py)."""
