"""Grow examples/langgraph_input.json on a running `langgraph dev` server (docs/serve.md)."""

import asyncio
import json
import sys
from pathlib import Path

from langgraph_sdk import get_client


async def main(url: str, dialogue: dict) -> None:
    """Stream one dialogue's drafts and answers, then read the thread's state."""
    client = get_client(url=url)
    thread = await client.threads.create()
    async for part in client.runs.stream(
        thread["thread_id"], "ideas", input=dialogue, stream_mode="custom"
    ):
        if part.event == "custom" and part.data["event"] in ("draft", "answer"):
            print(f"{part.data['event']:>6}: {part.data['text']}")
    state = await client.threads.get_state(thread["thread_id"])
    print("status:", state["values"]["status"], "turns:", len(state["values"]["turns"]))


if __name__ == "__main__":
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:2024"
    # The example seed as an initial state of the graph, target_turns 2.
    dialogue = json.loads(Path("examples/langgraph_input.json").read_text(encoding="utf-8"))
    asyncio.run(main(url, dialogue))
