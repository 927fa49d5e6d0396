"""Stream one chat over graphql-transport-ws and print the tokens as they arrive.

    .venv/bin/python examples/stream_chat.py "Write a haiku about the sea."
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.client import connect

QUERY = """subscription($input: ChatInput!) {
  chatStream(input: $input) {
    __typename
    ... on ChatToken { delta }
    ... on ChatSuccess { finishReason usage { completionTokens } timings { timeToFirstTokenMs totalMs } }
    ... on ChatError { code message field }
  }
}"""


async def main(prompt: str, url: str = "ws://127.0.0.1:8000/graphql") -> None:
    async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {
            "query": QUERY, "variables": {"input": {"chatId": "cli", "userPrompt": prompt}}}}))
        while (msg := json.loads(await ws.recv()))["type"] == "next":
            event = msg["payload"]["data"]["chatStream"]
            if event["__typename"] == "ChatToken":
                print(event["delta"], end="", flush=True)
            else:
                print(f"\n{json.dumps(event)}")
        if msg["type"] == "error":
            print(f"\nerror: {msg['payload']}")


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is the capital of France?"))
