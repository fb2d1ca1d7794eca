"""Workflows for tests/test_cli_errors.py: any JSON input, a big input, a disk filler, a
step that waits to be interrupted."""

from __future__ import annotations

import asyncio
import errno
import os
from typing import Any

import keel

app = keel.App()


@app.workflow()
async def echo(ctx: keel.Context, data: Any = None) -> Any:
    return data


@app.workflow()
async def size(ctx: keel.Context, text: str) -> int:
    return len(text)


@app.tool()
async def fill_disk(directory: str) -> str:
    """Fill the file system holding `directory` the first time; say which call this was."""
    marker = os.path.join(directory, "filled-once")
    if os.path.exists(marker):
        return "second call"
    with open(marker, "w") as f:
        f.write("1")
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        try:  # the last few bytes too
            while True:
                os.write(fd, b"\0")
        except OSError:
            pass
    finally:
        os.close(fd)
    return "first call"


@app.workflow()
async def fill(ctx: keel.Context, directory: str) -> str:
    return await ctx.call(fill_disk, directory)


@app.workflow()
async def waits(ctx: keel.Context) -> int:
    got = await ctx.wait_for("go")
    return len(got)


@app.tool()
async def nap(marker: str) -> str:
    """Say it started (the file `marker`), then wait longer than any test does."""
    with open(marker, "w") as f:
        f.write("started")
    await asyncio.sleep(3600)
    return "woke"


@app.workflow()
async def naps(ctx: keel.Context, marker: str) -> str:
    return await ctx.call(nap, marker)
