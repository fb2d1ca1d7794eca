"""One SQL layer for every SQL backend, dialects on the side.

- `dialect.py`: what differs between databases (`Dialect`), and what a second backend
  must provide; `sqlite_dialect.py`, `postgres_dialect.py`: the dialects
- `core.py`: the `Session` every query function works with (statements, the write
  transaction, payload sealing, rows into records)
- `writes.py`: writes several concerns share (lease check, journal entries, requests)
- `runs.py`, `reviews.py`, `usage.py`, `spans.py`, `identity.py`, `retention.py`,
  `rekey.py`: the queries, one module per concern
- `schema.py`: the current schema, for every dialect
- `store.py`: `SQLStore`, the `keel.store.Store` interfaces over those queries
"""
