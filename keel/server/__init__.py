"""The review console's server: a versioned JSON API over a Keel store (`keel serve`).

Nothing here is imported by `import keel`; FastAPI loads only when the server is used.
"""
