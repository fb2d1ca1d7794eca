"""Executors other than Keel's own engine that run the same workflows (see docs/temporal.md)."""
