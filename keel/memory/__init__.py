"""Tiered memory: session state outside the context window (`keel.memory.session`,
`ctx.session`)."""
