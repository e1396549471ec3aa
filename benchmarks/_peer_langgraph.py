"""LangGraph's interrupt and resume with its SQLite checkpointer, measured the way the
pipeline benchmark measures agentdash's pause and resume, so that both are compared on
one machine in one run (their figures move together with the machine's speed).

The graph is the agent loop at its smallest: a model node (scripted, as agentdash's is
in the benchmark) proposes a write_file call; a tool node asks for approval with
`interrupt()` and, once resumed with an approval, runs the same write_file function
agentdash runs (tools/builtin/files.py, in a workspace of its own) and hands the result
back to the model node. The checkpointer is langgraph-checkpoint-sqlite's SqliteSaver on
a file, set up as agentdash's SQLite is: WAL (SqliteSaver's own choice) and
synchronous=NORMAL (SQLite's default, FULL, syncs the log to disk at every commit, which
agentdash does not do). Checkpoints are written with durability "sync", before
the graph goes on, as agentdash stores a step's rows before the next one starts
(LangGraph's default, "async", writes them on a background thread while the next node
already runs, so the resume figure would leave the tool step's checkpoint out).

- pause: from the model node's return to `invoke()` returning with the interrupt
  checkpointed (the process then holds nothing for the thread);
- resume: from `invoke(Command(resume=...))` to the next call of the model node (the
  checkpoint loaded, the tool run, its result checkpointed).

The operator waits 20 ms before each decision, as in the pipeline benchmark.

    python -m benchmarks._peer_langgraph --probe sqlite   # raw JSON
"""

from __future__ import annotations

import json
import operator
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

CYCLES = 200
OPERATOR_THINKS_SECONDS = 0.02


def _probe() -> dict[str, Any]:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import START, StateGraph
    from langgraph.types import Command, interrupt

    from tools.builtin.files import FileTools
    from tools.builtin.workspace import Workspace

    class State(TypedDict):
        messages: Annotated[list[dict[str, Any]], operator.add]

    marks: dict[str, float] = {}

    def model(state: State) -> dict[str, Any]:
        marks["model_called"] = time.perf_counter()
        turn = len(state["messages"]) // 2
        call = {"name": "write_file", "input": {"path": "note.txt", "content": f"version {turn}"}}
        reply = {"role": "assistant", "tool_use": call}
        marks["model_returned"] = time.perf_counter()
        return {"messages": [reply]}

    with tempfile.TemporaryDirectory(prefix="agentdash-bench-langgraph-") as directory:
        root = Path(directory)
        (root / "workspace").mkdir()
        files = FileTools(Workspace(root / "workspace"))

        def tool(state: State) -> dict[str, Any]:
            call = state["messages"][-1]["tool_use"]
            if interrupt({"approve": call}) != "approve":
                result = "rejected"
            else:
                result = files.write_file(**call["input"])
            return {"messages": [{"role": "user", "tool_result": result}]}

        graph = StateGraph(State)
        graph.add_node("model", model)
        graph.add_node("tool", tool)
        graph.add_edge(START, "model")
        graph.add_edge("model", "tool")
        graph.add_edge("tool", "model")
        database = sqlite3.connect(root / "checkpoints.sqlite", check_same_thread=False)
        database.execute("PRAGMA synchronous=NORMAL")  # for this connection, as agentdash's
        app = graph.compile(checkpointer=SqliteSaver(database))
        config: Any = {"configurable": {"thread_id": "bench"}, "recursion_limit": 10 * CYCLES}

        pause_ms, resume_ms = [], []
        goal = {"messages": [{"role": "user", "content": "pause and resume"}]}
        app.invoke(goal, config, durability="sync")
        pause_ms.append((time.perf_counter() - marks["model_returned"]) * 1000)
        for _ in range(CYCLES):
            time.sleep(OPERATOR_THINKS_SECONDS)
            began = time.perf_counter()
            app.invoke(Command(resume="approve"), config, durability="sync")
            paused = time.perf_counter()
            resume_ms.append((marks["model_called"] - began) * 1000)
            pause_ms.append((paused - marks["model_returned"]) * 1000)
        database.close()
    return {"pause_ms": pause_ms[5:], "resume_ms": resume_ms[5:]}


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        print(json.dumps(_probe()))
