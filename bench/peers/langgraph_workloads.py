"""LangGraph side of the benchmark; runs inside bench/.venvs/langgraph.

Settings: the checkpointers of langgraph-checkpoint-sqlite on one file DB,
with their defaults: `PRAGMA journal_mode=WAL` set by `setup()`, SQLite's
default synchronous=FULL, and LangGraph's default `durability="async"` (a
step's checkpoint is written while the next step runs; the run waits for
all writes before returning). W1 is sequential, so it uses the sync
`SqliteSaver` with sync nodes and `invoke`, LangGraph's fastest path here
(`AsyncSqliteSaver` measured ~1.5 ms/step against ~1.1). W2-W4 need
concurrent `ainvoke` calls, which only `AsyncSqliteSaver` (one aiosqlite
connection) supports. Every run has its own thread_id.
"""

from __future__ import annotations

import asyncio
import operator
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from importlib.metadata import version
from itertools import count
from pathlib import Path
from typing import Annotated, Any, TypedDict

from _common import NAP_S, SIGNAL_PAYLOAD, W1_BLOB, W1_STEPS, W3_STEPS, main
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command, RunnableConfig, Send, interrupt


class ChainState(TypedDict):
    blob: str


class FanState(TypedDict, total=False):
    n: int
    results: Annotated[list[int], operator.add]  # reducer merges the Send branches
    total: int


class WaitState(TypedDict, total=False):
    payload: str


def noop(state: ChainState) -> dict[str, Any]:
    return {}  # touches nothing: the node only exists to be checkpointed


async def anoop(state: ChainState) -> dict[str, Any]:
    return {}


async def nap(item: dict[str, int]) -> dict[str, Any]:
    await asyncio.sleep(NAP_S)
    return {"results": [item["i"]]}


def scatter(state: FanState) -> list[Send]:
    return [Send("nap", {"i": i}) for i in range(state["n"])]


def reduce(state: FanState) -> dict[str, Any]:
    return {"total": sum(state["results"])}


async def ask(state: WaitState) -> dict[str, Any]:
    # interrupt() checkpoints and ends the invoke; resume re-enters this node.
    return {"payload": interrupt("go")}


def chain(steps: int, node: Callable[[ChainState], Any]) -> StateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(ChainState)
    prev = START
    for i in range(steps):
        builder.add_node(f"s{i}", node)
        builder.add_edge(prev, f"s{i}")
        prev = f"s{i}"
    builder.add_edge(prev, END)
    return builder


def fan_out() -> StateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(FanState)
    builder.add_node("nap", nap)
    builder.add_node("reduce", reduce)
    builder.add_conditional_edges(START, scatter, ["nap"])
    builder.add_edge("nap", "reduce")
    builder.add_edge("reduce", END)
    return builder


def wait_for_go() -> StateGraph[Any]:
    builder: StateGraph[Any] = StateGraph(WaitState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder


class LangGraphAdapter:
    def __init__(self) -> None:
        self._stack = AsyncExitStack()
        self._ids = count()
        self._graphs: dict[str, CompiledStateGraph[Any]] = {}
        self._w1: CompiledStateGraph[Any] | None = None

    async def open(self, workdir: Path, pg: str | None = None) -> None:
        if pg:  # the issue compares LangGraph on SQLite only: no Postgres saver installed
            raise ValueError("the LangGraph adapter runs on SQLite only")
        db = str(workdir / "langgraph.sqlite")
        saver = await self._stack.enter_async_context(AsyncSqliteSaver.from_conn_string(db))
        await saver.setup()
        sync_saver = self._stack.enter_context(SqliteSaver.from_conn_string(db))
        self._w1 = chain(W1_STEPS, noop).compile(checkpointer=sync_saver)
        self._graphs = {
            "w2": fan_out().compile(checkpointer=saver),
            "w3": chain(W3_STEPS, anoop).compile(checkpointer=saver),
            "w4": wait_for_go().compile(checkpointer=saver),
        }

    async def close(self) -> None:
        await self._stack.aclose()

    def _config(self, thread_id: str | None = None) -> RunnableConfig:
        return {"configurable": {"thread_id": thread_id or f"t{next(self._ids)}"}}

    async def w1(self) -> None:
        assert self._w1 is not None
        # Blocking the loop is fine: W1 runs one workflow at a time.
        self._w1.invoke({"blob": W1_BLOB}, self._config())

    async def w2(self, n: int) -> int:
        out = await self._graphs["w2"].ainvoke({"n": n, "results": []}, self._config())
        return int(out["total"])

    async def w3(self) -> None:
        await self._graphs["w3"].ainvoke({"blob": ""}, self._config())

    async def w4_start(self, i: int) -> str:
        thread_id = f"wait-{i}"
        out = await self._graphs["w4"].ainvoke({"payload": ""}, self._config(thread_id))
        if "__interrupt__" not in out:
            raise AssertionError("run finished instead of waiting on interrupt()")
        return thread_id

    async def w4_wait_suspended(self, handles: Sequence[Any]) -> None:
        return None  # ainvoke returns only once the interrupt is checkpointed

    async def w4_resume(self, handle: Any) -> None:
        cfg = self._config(str(handle))
        out = await self._graphs["w4"].ainvoke(Command(resume=SIGNAL_PAYLOAD), cfg)
        if out.get("payload") != SIGNAL_PAYLOAD:
            raise AssertionError("run finished without the resume payload")


def _versions() -> dict[str, str]:
    return {
        "langgraph": version("langgraph"),
        "langgraph-checkpoint-sqlite": version("langgraph-checkpoint-sqlite"),
        "aiosqlite": version("aiosqlite"),
    }


if __name__ == "__main__":
    main("langgraph", LangGraphAdapter, _versions)
