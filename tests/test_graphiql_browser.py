"""GraphiQL in a real browser: headless Chromium runs the page's example tabs, the two mutations
over HTTP and the chatStream subscription over a WebSocket, and nothing is loaded from outside."""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from pathlib import Path

from graphql import parse, validate
from playwright.async_api import Page, async_playwright

from graphql_api.http.graphiql import EXAMPLES
from graphql_api.schema import build_schema
from graphql_api.settings import ApiSettings

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE_EDITOR = ".graphiql-response .CodeMirror"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"


class Session:
    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list = []
        self.websockets: list = []
        page.on("request", lambda r: self.requests.append(r))
        page.on("websocket", self._websocket)

    def _websocket(self, ws) -> None:
        frames = {"url": ws.url, "sent": [], "received": []}
        ws.on("framesent", lambda f: frames["sent"].append(f))
        ws.on("framereceived", lambda f: frames["received"].append(f))
        self.websockets.append(frames)

    def outside(self, base: str) -> list[str]:
        """URLs the page asked for that are not on this server, WebSockets included."""
        ours = (base + "/", base.replace("http://", "ws://") + "/")
        return [u for u in [r.url for r in self.requests] + [w["url"] for w in self.websockets]
                if not u.startswith(ours)]

    def operations(self) -> dict[str, object]:
        """operationName -> request, for the GraphQL operations the page POSTed."""
        posts = [r for r in self.requests if r.method == "POST"]
        return {json.loads(r.post_data).get("operationName"): r for r in posts}

    async def tab_titles(self) -> list[str]:
        return await self.page.eval_on_selector_all(".graphiql-tab-button", "els => els.map(e => e.innerText)")

    async def open_tab(self, title: str) -> None:
        """Show that tab and wait until GraphiQL has parsed it: it learns the operation's name and type
        from the editor 100 ms after a change, and a run before that sends the previous tab's."""
        await self.page.click(f".graphiql-tab-button >> text={title}")
        await self.page.wait_for_function(
            "([sel, name]) => { const cm = document.querySelector(sel).CodeMirror;"
            " return cm.operationName === name && cm.documentAST != null; }", arg=[QUERY_EDITOR, title], timeout=10_000)

    async def editor_text(self, selector: str) -> str:
        return await self.page.evaluate("sel => document.querySelector(sel).CodeMirror.getValue()", selector)

    async def set_headers(self, headers: dict) -> None:
        await self.page.click(".graphiql-editor-tools button >> text=Headers")
        await self.page.evaluate("([sel, text]) => document.querySelector(sel).CodeMirror.setValue(text)",
                                 [HEADERS_EDITOR, json.dumps(headers)])

    async def response(self) -> dict:
        return json.loads(await self.editor_text(RESPONSE_EDITOR))


@asynccontextmanager
async def graphiql(live):
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            session = Session(await browser.new_page(viewport={"width": 1280, "height": 720}))
            await session.page.goto(f"{live.url}/graphql")
            await session.page.wait_for_selector(QUERY_EDITOR, timeout=30_000)
            yield session
        finally:
            await browser.close()


def test_the_example_tabs_are_valid_against_the_schema():
    schema = build_schema(ApiSettings())._schema
    for name, document in EXAMPLES.items():
        assert validate(schema, parse(document)) == [], name


async def test_graphiql_runs_the_example_mutations_in_headless_chromium(live):
    async with graphiql(live) as s:
        assert await s.tab_titles() == ["Chat", "ChatBatched", "ChatStream", "Extract", "ToolCall"]
        await s.open_tab("Chat")
        assert await s.editor_text(QUERY_EDITOR) == EXAMPLES["chat"]
        await s.set_headers({"x-example": "graphiql"})
        await s.page.click(".graphiql-execute-button")
        await s.page.wait_for_function(
            "() => (document.querySelector('.graphiql-response') || {}).innerText?.includes('Paris')",
            timeout=120_000)
        await s.page.screenshot(path=ARTIFACTS / "graphiql.png")
        chat = (await s.response())["data"]["chat"]

        await s.open_tab("ChatBatched")
        await s.page.click(".graphiql-execute-button")
        await s.page.wait_for_function(
            "() => (document.querySelector('.graphiql-response') || {}).innerText?.includes('partialSuccess')",
            timeout=120_000)
        batched = (await s.response())["data"]["chatBatched"]
        posts = s.operations()
        outside = s.outside(live.url)
    assert chat["__typename"] == "ChatSuccess" and "Paris" in chat["response"]
    # The headers tab goes with the request; each tab has its own.
    assert (posts["Chat"].headers.get("x-example"), posts["ChatBatched"].headers.get("x-example")) == ("graphiql", None)
    assert (batched["succeeded"], batched["failed"], batched["partialSuccess"]) == (2, 1, True)
    assert [r["__typename"] for r in batched["results"]] == ["ChatSuccess", "ChatError", "ChatSuccess"]
    assert (batched["results"][1]["code"], batched["results"][1]["field"]) == ("INVALID_INPUT", "userPrompt")
    assert outside == [], "GraphiQL must load everything from this server"


async def test_graphiql_streams_chat_tokens_over_a_websocket_in_headless_chromium(live):
    async with graphiql(live) as s:
        await s.open_tab("ChatStream")
        assert await s.editor_text(QUERY_EDITOR) == EXAMPLES["chatStream"]
        await s.set_headers({"x-api-key": "k1"})
        # GraphiQL shows the latest payload of a subscription: keep every text the pane shows.
        await s.page.evaluate("""sel => {
            const cm = document.querySelector(sel).CodeMirror;
            window.panes = [];
            cm.on('change', () => {
                const text = cm.getValue();
                if (text.trim() && text !== window.panes[window.panes.length - 1]) window.panes.push(text);
            });
        }""", RESPONSE_EDITOR)
        await s.page.click(".graphiql-execute-button")
        await s.page.wait_for_function(
            "() => (window.panes[window.panes.length - 1] || '').includes('ChatSuccess')", timeout=120_000)
        await s.page.screenshot(path=ARTIFACTS / "graphiql-stream.png")
        for _ in range(100):  # the server's "complete" follows the ChatSuccess
            if any('"complete"' in f for w in s.websockets for f in w["received"]):
                break
            await asyncio.sleep(0.05)
        panes = [json.loads(text)["data"]["chatStream"] for text in await s.page.evaluate("window.panes")]
        posted = s.operations()
        websockets, outside = s.websockets, s.outside(live.url)

    # The transport: one WebSocket to this server's /graphql, the headers tab in connection_init.
    assert [w["url"] for w in websockets] == [live.url.replace("http://", "ws://") + "/graphql"]
    sent = [json.loads(f) for f in websockets[0]["sent"]]
    assert sent[0] == {"type": "connection_init", "payload": {"x-api-key": "k1"}}
    assert sent[1]["type"] == "subscribe" and sent[1]["payload"]["query"] == EXAMPLES["chatStream"]
    assert "ChatStream" not in posted
    received = [json.loads(f) for f in websockets[0]["received"]]
    events = [m["payload"]["data"]["chatStream"] for m in received if m["type"] == "next"]
    tokens, final = events[:-1], events[-1]
    assert [m["type"] for m in received if m["type"] in ("next", "error", "complete")][-1] == "complete"
    assert all(t["__typename"] == "ChatToken" for t in tokens) and final["__typename"] == "ChatSuccess"
    assert [t["index"] for t in tokens] == list(range(len(tokens)))
    assert final["response"] == "".join(t["delta"] for t in tokens) != ""

    # The pane: it changed with the tokens, each one shown as it came, and ended with the ChatSuccess.
    shown, last = panes[:-1], panes[-1]
    assert last == final
    assert len(shown) >= 5 and all(p["__typename"] == "ChatToken" for p in shown), shown
    assert all(p == tokens[p["index"]] for p in shown)
    assert [p["index"] for p in shown] == sorted({p["index"] for p in shown})
    if len(shown) == len(tokens):  # nothing coalesced by React: the pane alone spells the response
        assert last["response"] == "".join(p["delta"] for p in shown)
    assert outside == [], "GraphiQL must load everything from this server"


async def test_graphiql_works_with_an_api_key_in_its_headers_tab(engine, serve, tmp_path):
    """Keys on: the page itself is open, and the headers tab carries the key, over HTTP for a
    mutation and in connection_init for a subscription."""
    from types import SimpleNamespace

    from graphql_api.app import create_app
    from http_common.keys import new_key

    key, line = new_key("browser")
    (tmp_path / "keys").write_text(line + "\n")
    server = SimpleNamespace(url=await serve(create_app(ApiSettings(api_keys_file=str(tmp_path / "keys")), engine=engine)))
    async with graphiql(server) as s:
        await s.open_tab("ChatStream")
        await s.set_headers({"authorization": f"Bearer {key}"})
        await s.page.click(".graphiql-execute-button")
        await s.page.wait_for_function(
            "() => (document.querySelector('.graphiql-response') || {}).innerText?.includes('ChatSuccess')",
            timeout=120_000)
        streamed = (await s.response())["data"]["chatStream"]
        init = json.loads(s.websockets[0]["sent"][0])
        await s.open_tab("Chat")
        await s.set_headers({"authorization": f"Bearer {key}"})
        await s.page.click(".graphiql-execute-button")
        await s.page.wait_for_function(
            "() => (document.querySelector('.graphiql-response') || {}).innerText?.includes('Paris')", timeout=120_000)
        chat = (await s.response())["data"]["chat"]
    assert init == {"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}
    assert streamed["__typename"] == "ChatSuccess" and chat["__typename"] == "ChatSuccess"
