"""`python -m benchmarks.extraction --peer http://127.0.0.1:8090`: JSON extraction answers, ours against a peer.

Every case of ``benchmarks.extraction_set`` (45 short texts, 5 schemas, hand-written expected values)
goes greedy, ``max_tokens`` 200, 8 at a time, with its schema as the response format: to our GraphQL
API (``chat`` with ``responseFormat.jsonSchema``; the embedded engine with the default settings, as
a user runs it) and to the peer's ``/v1/chat/completions`` (``response_format`` json_schema; llama.cpp's
``llama-server`` from ../shared/peer/llama-server.sh, on the same GGUF). Ours runs once per JSON
whitespace rule (``compact``: none; ``flexible``: what the engine ships), and each server with two
prompts: the case's text alone (``plain``), and with the schema in the system prompt (``schema``).

Printed per server, rule and prompt: valid answers (parsed and valid against the schema), field
accuracy (leaf fields equal to the expected ones, over all fields of all cases, hallucinated optional
fields counted wrong), and mean completion tokens per answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import jsonschema

from benchmarks.extraction_set import CASES, SCHEMAS, prompt, score
from benchmarks.serving import serve, stop, wait_ready

SYSTEM = "You are a helpful assistant."
MAX_TOKENS = 200
CLIENTS = 8
QUERY = ("mutation($input: ChatInput!) { chat(input: $input) { __typename ... on ChatSuccess { response "
         "usage { completionTokens } } ... on ChatError { code message partialText } } }")


def system_prompt(case: dict[str, Any], variant: str) -> str:
    if variant == "plain":
        return SYSTEM
    return f"{SYSTEM} Answer with JSON that matches this JSON Schema: {json.dumps(SCHEMAS[case['schema']])}"


@dataclass
class Answer:
    text: str | None  # None: no answer (an error)
    tokens: int


async def ask_ours(http: httpx.AsyncClient, url: str, case: dict[str, Any], variant: str) -> Answer:
    body = {"query": QUERY, "variables": {"input": {
        "chatId": case["id"], "userPrompt": prompt(case), "systemPrompt": system_prompt(case, variant),
        "options": {"maxTokens": MAX_TOKENS, "responseFormat": {"jsonSchema": SCHEMAS[case["schema"]]}}}}}
    chat = (await http.post(f"{url}/graphql", json=body)).json()["data"]["chat"]
    if chat["__typename"] == "ChatSuccess":
        return Answer(chat["response"], chat["usage"]["completionTokens"])
    return Answer(None, MAX_TOKENS if chat["code"] == "INCOMPLETE_OUTPUT" else 0)


async def ask_peer(http: httpx.AsyncClient, url: str, case: dict[str, Any], variant: str) -> Answer:
    body = {"messages": [{"role": "system", "content": system_prompt(case, variant)},
                         {"role": "user", "content": prompt(case)}],
            "max_tokens": MAX_TOKENS, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"name": case["schema"],
                                                                       "schema": SCHEMAS[case["schema"]]}}}
    reply = (await http.post(f"{url}/v1/chat/completions", json=body)).json()
    choice = reply["choices"][0]
    return Answer(choice["message"]["content"], reply["usage"]["completion_tokens"])


def judge(case: dict[str, Any], answer: Answer) -> tuple[bool, int, int]:
    """Whether the answer is valid, and its (fields right, fields counted)."""
    _, total = score(case["expected"], case["expected"])
    if answer.text is None:
        return False, 0, total
    try:
        value = json.loads(answer.text)
        jsonschema.validate(value, SCHEMAS[case["schema"]])
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False, 0, total
    right, total = score(case["expected"], value)
    return True, right, total


async def run(ask, url: str, variant: str) -> dict[str, float]:
    limit = asyncio.Semaphore(CLIENTS)

    async def one(http: httpx.AsyncClient, case: dict[str, Any]) -> tuple[bool, int, int, int]:
        async with limit:
            answer = await ask(http, url, case, variant)
        return (*judge(case, answer), answer.tokens)

    async with httpx.AsyncClient(timeout=600) as http:
        results = await asyncio.gather(*(one(http, case) for case in CASES))
    return {"valid": sum(r[0] for r in results), "cases": len(results),
            "accuracy": sum(r[1] for r in results) / sum(r[2] for r in results),
            "tokens": sum(r[3] for r in results) / len(results)}


async def serve_ours():
    """Our GraphQL API with the embedded engine (default settings), on a free loopback port, ready."""
    from graphql_api.app import create_app
    from graphql_api.settings import ApiSettings

    app = create_app(ApiSettings())
    server, task, url = await serve(app)
    async with httpx.AsyncClient() as http:
        await wait_ready(http, url)
    return app, server, task, url


async def main(args: argparse.Namespace) -> None:
    from inference.engine import structured

    rows: list[tuple[str, str, str, dict[str, float]]] = []
    app, server, task, url = await serve_ours()
    formats = app.state.api.engine.target.engine.formats
    try:
        for variant in args.prompts:
            for rule, options in (("compact", structured.COMPACT_JSON), ("flexible", structured.FLEXIBLE_JSON)):
                structured.JSON_OPTIONS = options
                formats._cache.clear()  # compiled grammars are cached by schema
                rows.append(("ours", rule, variant, await run(ask_ours, url, variant)))
                print(*rows[-1], flush=True)
            if args.peer:
                rows.append(("peer", "its own", variant, await run(ask_peer, args.peer, variant)))
                print(*rows[-1], flush=True)
    finally:
        await stop(server, task)
    print(f"\n{len(CASES)} cases, greedy, max_tokens {MAX_TOKENS}, {CLIENTS} at a time; peer: {args.peer or 'none'}\n")
    print("| server | JSON whitespace | prompt | valid | field accuracy | tokens per answer |")
    print("|---|---|---|---|---|---|")
    for name, rule, variant, r in rows:
        print(f"| {name} | {rule} | {variant} | {r['valid']} of {r['cases']} | {r['accuracy']:.1%} | {r['tokens']:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer", default="", help="an OpenAI-compatible server on the same model (llama.cpp's)")
    parser.add_argument("--prompts", nargs="+", default=["plain", "schema"], choices=["plain", "schema"])
    asyncio.run(main(parser.parse_args()))
