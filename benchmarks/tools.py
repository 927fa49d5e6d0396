"""`python -m benchmarks.tools --peer http://127.0.0.1:8090`: when the model calls a tool, ours against a peer.

24 prompts, each offered the same four tools: 12 that one of them fits (with the tool expected) and 12
that none fits. Each goes greedy, ``max_tokens`` 120, to our inference service (the embedded engine,
default settings, ``/v1/chat/completions``) and to the peer's (llama.cpp's ``llama-server`` on the same
GGUF, started with ``LLAMA_ARG_JINJA=1`` so that it takes ``tools``), twice: ``tool_choice`` ``auto``
and ``required``. Printed per server and choice: calls when a tool fits (and of those, the right
tool), no call when none fits, and calls whose arguments are valid against the tool's schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import httpx
import jsonschema

from benchmarks.serving import serve, stop, wait_ready

TOOLS: list[dict[str, Any]] = [
    {"name": "get_weather", "description": "Get the current weather in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "get_time", "description": "Get the current local time in a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    {"name": "convert_currency", "description": "Convert an amount of money from one currency to another",
     "parameters": {"type": "object", "properties": {"amount": {"type": "number"}, "from": {"type": "string"},
                                                     "to": {"type": "string"}}, "required": ["amount", "from", "to"]}},
    {"name": "send_email", "description": "Send an email to a recipient",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"},
                                                     "body": {"type": "string"}}, "required": ["to", "subject", "body"]}},
]
SCHEMAS = {t["name"]: t["parameters"] for t in TOOLS}
FITTING = [
    ("What's the weather like in Paris right now?", "get_weather"),
    ("Is it raining in London today?", "get_weather"),
    ("Tell me the current weather in Tokyo.", "get_weather"),
    ("How hot is it in Madrid at the moment?", "get_weather"),
    ("What time is it in New York?", "get_time"),
    ("Tell me the current local time in Sydney.", "get_time"),
    ("What is the time right now in Berlin?", "get_time"),
    ("Convert 100 US dollars to euros.", "convert_currency"),
    ("How many Japanese yen is 50 British pounds?", "convert_currency"),
    ("Change 20 euros into Swiss francs.", "convert_currency"),
    ("Send an email to anna@example.com saying the meeting moved to Friday.", "send_email"),
    ("Email bob@example.com with the subject 'Invoice' and tell him it is paid.", "send_email"),
]
UNFITTING = [
    "Write a haiku about the sea.",
    "What is 17 times 3?",
    "Explain what photosynthesis is in one sentence.",
    "Hello! How are you?",
    "Who wrote Romeo and Juliet?",
    "Give me three names for a pet cat.",
    "What is the capital of Italy?",
    "Translate 'good morning' into Spanish.",
    "Tell me a short joke.",
    "What colour do you get by mixing blue and yellow?",
    "Summarise the plot of Cinderella in one sentence.",
    "List the days of the week.",
]
MAX_TOKENS = 120


async def ask(http: httpx.AsyncClient, url: str, prompt: str, choice: str) -> dict[str, Any]:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS, "temperature": 0,
            "tools": [{"type": "function", "function": t} for t in TOOLS], "tool_choice": choice}
    reply = await http.post(f"{url}/v1/chat/completions", json=body)
    if reply.status_code != 200:
        return {"error": reply.text[:200]}
    return reply.json()["choices"][0]["message"]


def valid(call: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(json.loads(call["function"]["arguments"]), SCHEMAS[call["function"]["name"]])
    except (KeyError, ValueError, jsonschema.ValidationError):
        return False
    return True


async def run(url: str, choice: str) -> dict[str, int]:
    limit = asyncio.Semaphore(4)
    async with httpx.AsyncClient(timeout=600) as http:
        async def one(prompt: str) -> dict[str, Any]:
            async with limit:
                return await ask(http, url, prompt, choice)
        fitting = await asyncio.gather(*(one(p) for p, _ in FITTING))
        unfitting = await asyncio.gather(*(one(p) for p in UNFITTING))
    calls = [m.get("tool_calls") or [] for m in fitting + unfitting]
    return {"called": sum(bool(c) for c in calls[:len(FITTING)]),
            "right_tool": sum(bool(c) and c[0]["function"]["name"] == tool for c, (_, tool) in zip(calls, FITTING, strict=False)),
            "no_call": sum(not c for c in calls[len(FITTING):]),
            "calls": sum(len(c) for c in calls), "valid": sum(valid(x) for c in calls for x in c),
            "errors": sum("error" in m for m in fitting + unfitting)}


async def serve_ours() -> tuple[Any, asyncio.Task, str]:
    """Our inference service with the embedded engine (default settings), on a free loopback port, ready."""
    from inference.engine.async_engine import AsyncEngine
    from inference.engine.config import EngineConfig
    from inference.engine.llm_engine import LLMEngine
    from inference.service.app import ServiceSettings, create_service

    server, task, url = await serve(create_service(AsyncEngine(LLMEngine.from_config(EngineConfig())), ServiceSettings()))
    async with httpx.AsyncClient() as http:
        await wait_ready(http, url)
    return server, task, url


async def main(args: argparse.Namespace) -> None:
    server, task, url = await serve_ours()
    rows = []
    try:
        for choice in ("auto", "required"):
            for name, where in (("ours", url), ("peer", args.peer)):
                if where:
                    rows.append((name, choice, await run(where, choice)))
                    print(*rows[-1], flush=True)
    finally:
        await stop(server, task)
    print(f"\n{len(FITTING)} prompts a tool fits, {len(UNFITTING)} none fits; greedy; peer: {args.peer or 'none'}\n")
    print("| server | tool_choice | called when a tool fits | right tool | no call when none fits | valid arguments | errors |")
    print("|---|---|---|---|---|---|---|")
    for name, choice, r in rows:
        print(f"| {name} | {choice} | {r['called']} of {len(FITTING)} | {r['right_tool']} | {r['no_call']} of {len(UNFITTING)} "
              f"| {r['valid']} of {r['calls']} | {r['errors']} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="", help="an OpenAI-compatible server on the same model, taking tools")
    asyncio.run(main(parser.parse_args()))
