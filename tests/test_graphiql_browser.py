"""GraphiQL in a real browser: headless Chromium runs a chat mutation through the page."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
QUERY = """mutation {
  chat(input: {chatId: "browser", userPrompt: "What is the capital of France?"}) {
    __typename
    ... on ChatSuccess { chatId response finishReason }
    ... on ChatError { code message }
  }
}"""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


async def test_graphiql_runs_a_chat_mutation_in_headless_chromium(live):
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 720})
            outside: list[str] = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live.url) else None)
            await page.goto(f"{live.url}/graphql")
            editor = ".graphiql-query-editor .CodeMirror"
            await page.wait_for_selector(editor, timeout=30_000)
            await page.evaluate("([sel, q]) => document.querySelector(sel).CodeMirror.setValue(q)", [editor, QUERY])
            await page.click(".graphiql-execute-button")
            await page.wait_for_function(
                "() => (document.querySelector('.graphiql-response') || {}).innerText?.includes('Paris')",
                timeout=60_000)
            await page.screenshot(path=ARTIFACTS / "graphiql.png")
            response = await page.inner_text(".graphiql-response")
        finally:
            await browser.close()
    assert '"__typename": "ChatSuccess"' in response and "Paris" in response
    assert outside == [], "GraphiQL must load everything from this server"
