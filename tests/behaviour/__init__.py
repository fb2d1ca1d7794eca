"""Workflow scenarios run on every executor (Keel's engine, Temporal): one contract."""
