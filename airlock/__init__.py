"""Airlock's command line (``airlock.cli``) and the generated protobuf code (``airlock.v1``)."""
