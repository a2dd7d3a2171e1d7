"""Generated gRPC API of the ServerlessOS node agent (see hack/gen_proto.py)."""
