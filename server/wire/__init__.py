"""Wire formats that are not an RPC: the protobuf JSON of run events on NATS.

Shared by the executor's event relay and the control plane's NATS submit path, so it sits
below both; nothing here imports gRPC or connectrpc.
"""
