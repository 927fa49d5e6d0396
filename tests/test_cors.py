"""CORS on both tiers: what a browser on another origin can do (headless Chromium), and the headers
of preflights and responses (httpx). The fake engine: the origin rules are the point, not the model."""

from __future__ import annotations

import json

import httpx
import pytest
from fakes import FakeEngine
from playwright.async_api import async_playwright
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route
from test_graphiql_browser import CHROMIUM, FLAGS
from test_keys import Keys

from graphql_api.app import create_app
from graphql_api.settings import ApiSettings
from inference.service.app import ServiceSettings, create_service

ALLOWED, OTHER = "https://app.example.com", "https://evil.example.com"
PAGE = "<!doctype html><title>app</title><p>a front end on another origin</p>"

# What the page runs: a chat over fetch with the key in a header (reading the exposed request id),
# a stream over SSE (fetch with Accept: text/event-stream), and a graphql-transport-ws subscription.
SCRIPT = """async ({url, key}) => {
  const out = {};
  const query = 'mutation { chat(input: {chatId: "c", userPrompt: "hi"}) { __typename ... on ChatSuccess { response } } }';
  try {
    const r = await fetch(url + '/graphql', {method: 'POST', headers: {'content-type': 'application/json',
      'authorization': 'Bearer ' + key, 'x-request-id': 'from-the-page'}, body: JSON.stringify({query})});
    out.fetch = {status: r.status, requestId: r.headers.get('x-request-id'), body: await r.json()};
  } catch (e) { out.fetch = {error: String(e)}; }
  const stream = 'subscription { chatStream(input: {chatId: "s", userPrompt: "one two three"}) { __typename } }';
  try {
    const r = await fetch(url + '/graphql', {method: 'POST', headers: {'content-type': 'application/json',
      'accept': 'text/event-stream', 'authorization': 'Bearer ' + key}, body: JSON.stringify({query: stream})});
    const reader = r.body.getReader(); let text = '';
    for (;;) { const {done, value} = await reader.read(); if (done) break; text += new TextDecoder().decode(value); }
    out.sse = {status: r.status, events: (text.match(/event: next/g) || []).length};
  } catch (e) { out.sse = {error: String(e)}; }
  out.ws = await new Promise((resolve) => {
    const ws = new WebSocket(url.replace('http', 'ws') + '/graphql', 'graphql-transport-ws'); const got = [];
    const timer = setTimeout(() => resolve({timeout: true, got}), 5000);
    ws.onopen = () => ws.send(JSON.stringify({type: 'connection_init', payload: {authorization: 'Bearer ' + key}}));
    ws.onmessage = (m) => { const msg = JSON.parse(m.data); got.push(msg.type);
      if (msg.type === 'connection_ack') ws.send(JSON.stringify({id: '1', type: 'subscribe', payload: {query: stream}}));
      if (msg.type === 'complete') { clearTimeout(timer); resolve({got}); ws.close(); } };
    ws.onerror = () => { clearTimeout(timer); resolve({error: true, got}); };
    ws.onclose = (e) => { clearTimeout(timer); resolve({closed: e.code, got}); };
  });
  return out;
}"""


@pytest.fixture
def keys(tmp_path) -> Keys:
    return Keys(tmp_path / "keys", {"web": ""})


async def test_a_page_on_an_allowed_origin_can_chat_stream_and_subscribe_and_one_on_another_cannot(serve, keys, tmp_path):
    pages = Starlette(routes=[Route("/", lambda request: HTMLResponse(PAGE))])
    allowed_url, other_url = await serve(pages), await serve(pages)
    api = create_app(ApiSettings(api_keys_file=keys.path, data_dir=tmp_path, allowed_origins=allowed_url), engine=FakeEngine())
    url = await serve(api)
    results = {}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            for name, origin in (("allowed", allowed_url), ("other", other_url)):
                page = await browser.new_page()
                await page.goto(origin + "/")
                results[name] = await page.evaluate(SCRIPT, {"url": url, "key": keys.keys["web"]})
        finally:
            await browser.close()
    ok, refused = results["allowed"], results["other"]
    assert ok["fetch"]["status"] == 200 and ok["fetch"]["body"]["data"]["chat"]["response"] == "echo: hi", ok
    assert ok["fetch"]["requestId"] == "from-the-page"  # exposed to the page
    assert ok["sse"]["status"] == 200 and ok["sse"]["events"] >= 4, ok
    assert ok["ws"]["got"][0] == "connection_ack" and ok["ws"]["got"][-1] == "complete", ok
    assert "TypeError" in refused["fetch"].get("error", ""), refused  # the browser refused the answer
    assert "TypeError" in refused["sse"].get("error", ""), refused
    assert "connection_ack" not in refused["ws"]["got"], refused


@pytest.mark.parametrize("tier", ["api", "service"])
async def test_preflights_and_responses_carry_the_cors_headers_on_both_tiers(serve, tier, tmp_path):
    if tier == "api":
        app = create_app(ApiSettings(data_dir=tmp_path, allowed_origins=ALLOWED + "/"), engine=FakeEngine())
        path = "/graphql"
        body = {"query": "{ health { ready } }"}
    else:
        app = create_service(FakeEngine(), ServiceSettings(allowed_origins=ALLOWED))  # type: ignore[arg-type]
        path = "/v1/models"
        body = None
    url = await serve(app)
    preflight = {"origin": ALLOWED, "access-control-request-method": "POST",
                 "access-control-request-headers": "authorization, content-type, x-request-id"}
    async with httpx.AsyncClient() as client:
        ok = await client.options(f"{url}{path}", headers=preflight)
        assert ok.status_code == 200, ok.text
        assert ok.headers["access-control-allow-origin"] == ALLOWED
        assert set(ok.headers["access-control-allow-methods"].replace(" ", "").split(",")) == {"GET", "POST", "OPTIONS"}
        assert {"authorization", "content-type", "x-request-id", "x-api-key", "accept"} <= \
            set(ok.headers["access-control-allow-headers"].replace(" ", "").lower().split(","))
        assert ok.headers["access-control-max-age"] == "600" and "access-control-allow-credentials" not in ok.headers
        refused = await client.options(f"{url}{path}", headers={**preflight, "origin": OTHER})
        assert refused.status_code == 403 and json.loads(refused.text)["errors"][0]["extensions"]["code"] == "FORBIDDEN_ORIGIN"
        if body is not None:
            simple = await client.post(f"{url}{path}", json=body, headers={"origin": ALLOWED})
        else:
            simple = await client.get(f"{url}{path}", headers={"origin": ALLOWED})
        assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == ALLOWED
        assert "x-request-id" in simple.headers.get("access-control-expose-headers", "").lower()
        other = await client.get(f"{url}{path}", headers={"origin": OTHER})
        assert other.status_code == 403
        server_side = await client.get(f"{url}/healthz")  # no Origin: a server, as before
        assert server_side.status_code == 200 and "access-control-allow-origin" not in server_side.headers
