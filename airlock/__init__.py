"""Generated protobuf code (package airlock.v1)."""
