"""Helper apps and scripts that tests run in worker subprocesses."""
