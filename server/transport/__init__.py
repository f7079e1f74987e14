"""Transports: grpc.aio and gRPC-Web (connectrpc). Only this package touches generated code."""
