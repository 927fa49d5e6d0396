"""A small client of the batch-job API for tests: submit inline or as a JSONL upload (GraphQL
multipart request), wait, page through results, read results.jsonl."""

from __future__ import annotations

import asyncio
import json

import httpx

JOB = "id status error counts { total completed failed cancelled } usage { promptTokens completionTokens } metadata"
SUBMIT = "mutation($input: BatchJobInput!) { submitBatchJob(input: $input) { " + JOB + " } }"
GET = "query($id: ID!) { batchJob(id: $id) { " + JOB + " } }"
CANCEL = "mutation($id: ID!) { cancelBatchJob(id: $id) { " + JOB + " } }"
RESULTS = """query($id: ID!, $first: Int!, $after: String) { batchJob(id: $id) { results(first: $first, after: $after) {
  edges { cursor node { __typename ... on ChatSuccess { chatId response finishReason } ... on ChatError { chatId code message field } } }
  pageInfo { hasNextPage endCursor } } } }"""
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "EXPIRED"}


def line(custom_id: str, prompt: str, max_tokens: int = 4, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                                "temperature": 0, **body}})


class JobsClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        self.headers = headers or {}

    async def gql(self, query: str, variables: dict) -> dict:
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.post(f"{self.url}/graphql", json={"query": query, "variables": variables}, headers=self.headers)
        return r.json()

    async def ok(self, query: str, variables: dict) -> dict:
        body = await self.gql(query, variables)
        assert "errors" not in body, body
        return body["data"]

    async def submit_items(self, items: list[dict], metadata: object = None) -> dict:
        return (await self.ok(SUBMIT, {"input": {"items": items, "metadata": metadata}}))["submitBatchJob"]

    async def submit_file(self, content: bytes, metadata: object = None) -> dict:
        operations = {"query": SUBMIT, "variables": {"input": {"file": None, "metadata": metadata}}}
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.post(f"{self.url}/graphql", headers=self.headers,
                                  data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.input.file"]})},
                                  files={"0": ("batch.jsonl", content, "application/jsonl")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert "errors" not in body, body
        return body["data"]["submitBatchJob"]

    async def job(self, job_id: str) -> dict:
        return (await self.ok(GET, {"id": job_id}))["batchJob"]

    async def wait(self, job_id: str, timeout: float = 120.0, until=lambda j: j["status"] in FINAL) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            job = await self.job(job_id)
            if until(job):
                return job
            assert asyncio.get_running_loop().time() < deadline, f"job not there in {timeout} s: {job}"
            await asyncio.sleep(0.1)

    async def results(self, job_id: str, page: int = 50) -> list[dict]:
        out: list[dict] = []
        after = None
        while True:
            conn = (await self.ok(RESULTS, {"id": job_id, "first": page, "after": after}))["batchJob"]["results"]
            out += [e["node"] for e in conn["edges"]]
            if not conn["pageInfo"]["hasNextPage"]:
                return out
            after = conn["pageInfo"]["endCursor"]

    async def results_jsonl(self, job_id: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=120) as client:
            r = await client.get(f"{self.url}/jobs/{job_id}/results.jsonl", headers=self.headers)
        assert r.status_code == 200, r.text
        return [json.loads(x) for x in r.text.splitlines()]
