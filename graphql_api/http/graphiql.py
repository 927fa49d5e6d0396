"""GraphiQL served with its scripts from this server, so the IDE works without internet access.

The page is ours (``PAGE``), not Strawberry's: it opens with ready examples (``EXAMPLES``, one tab
each) and sends subscriptions over a WebSocket (graphql-transport-ws) to this server. It names the
exact package versions it loads from unpkg.com, with integrity hashes (the ones Strawberry
0.341's page uses). ``fetch`` (run by the set-up) takes exactly those packages from the npm
registry with ``npm pack`` and keeps their files under ``<venv>/share/graphiql/<name>@<version>/``.
The app serves them at ``/graphiql-assets/`` and ``page_html`` points the page there; the files are
the same bytes, so the integrity hashes still hold. Without them the page falls back to unpkg.com.

The WebSocket client is graphql-ws, which ``graphiql.min.js`` (3.8.3) bundles: GraphiQL's
``createFetcher`` uses it for a subscription when given ``subscriptionUrl``, and passes the
headers tab as the ``connection_init`` payload. So no other package is needed for streaming.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CDN = "https://unpkg.com/"
PREFIX = "/graphiql-assets/"

# One GraphiQL tab each, runnable as they are. GraphiQL titles a tab with its operation's name.
EXAMPLES: dict[str, str] = {
    "chat": """\
# One chat, answered in full.
# Ctrl-Enter or the play button runs it.
mutation Chat {
  chat(input: {
    chatId: "1"
    userPrompt: "What is the capital of France?"
  }) {
    __typename
    ... on ChatSuccess {
      chatId response finishReason
      usage { promptTokens completionTokens }
    }
    ... on ChatError { chatId code message field }
  }
}
""",
    "chatBatched": """\
# Several chats in one request. The empty prompt
# gets a ChatError; the others are still answered.
mutation ChatBatched {
  chatBatched(inputs: [
    {chatId: "a", userPrompt: "Name a primary color.",
     options: {maxTokens: 16}}
    {chatId: "b", userPrompt: ""}
    {chatId: "c", userPrompt: "Say hello in French.",
     options: {maxTokens: 16}}
  ]) {
    succeeded failed partialSuccess
    results {
      __typename
      ... on ChatSuccess { chatId response finishReason }
      ... on ChatError { chatId code field message }
    }
  }
}
""",
    "chatStream": """\
# Streamed over a WebSocket (graphql-transport-ws):
# the response pane shows each ChatToken as it
# arrives, then the ChatSuccess with the response.
subscription ChatStream {
  chatStream(input: {
    chatId: "s"
    userPrompt: "Write a haiku about the sea."
    options: {maxTokens: 40}
  }) {
    __typename
    ... on ChatToken { index delta }
    ... on ChatSuccess { response finishReason }
    ... on ChatError { code message }
  }
}
""",
    "structured": """\
# Structured output: the answer follows the JSON
# Schema, and ChatSuccess.json holds it parsed.
# Also: responseFormat {jsonObject: true},
# {regex: "..."} or {choice: ["yes", "no"]}.
mutation Extract {
  chat(input: {
    chatId: "x"
    userPrompt: "Extract the person: Marie Curie, 66, was a physicist and chemist."
    options: {maxTokens: 80, responseFormat: {jsonSchema: {
      type: "object"
      properties: {
        name: {type: "string", maxLength: 32}
        age: {type: "integer", minimum: 0, maximum: 150}
        role: {enum: ["engineer", "doctor", "teacher", "scientist", "other"]}
      }
      required: ["name", "age", "role"]
      additionalProperties: false
    }}}
  }) {
    __typename
    ... on ChatSuccess { json response finishReason }
    ... on ChatError { code message field partialText }
  }
}
""",
}

PAGE = """\
<!doctype html>
<html>
  <head>
    <meta charset="utf-8" />
    <title>GraphiQL · smollm-graphql</title>
    <link rel="icon" href="data:," />
    <style>
      body { height: 100%; margin: 0; width: 100%; overflow: hidden; }
      #graphiql { height: 100vh; display: flex; }
      .graphiql-explorer-actions select { margin-left: 4px; }
    </style>
    <script crossorigin src="https://unpkg.com/react@18.2.0/umd/react.production.min.js"
      integrity="sha384-tMH8h3BGESGckSAVGZ82T9n90ztNXxvdwvdM6UoR56cYcf+0iGXBliJ29D+wZ/x8"></script>
    <script crossorigin src="https://unpkg.com/react-dom@18.2.0/umd/react-dom.production.min.js"
      integrity="sha384-bm7MnzvK++ykSwVJ2tynSE5TRdN+xL418osEVF2DE/L/gfWHj91J2Sphe582B1Bh"></script>
    <link crossorigin rel="stylesheet" href="https://unpkg.com/graphiql@3.8.3/graphiql.min.css"
      integrity="sha384-Mq3vbRBY71jfjQAt/DcjxUIYY33ksal4cgdRt9U/hNPvHBCaT2JfJ/PTRiPKf0aM" />
    <link crossorigin rel="stylesheet" href="https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/style.css"
      integrity="sha384-5DFJlDPW2tSATRbM8kzoP1j194jexLswuNmClWoRr2Q0x7R68JIQzPHZ02Faktwi" />
  </head>
  <body>
    <div id="graphiql">Loading...</div>
    <script crossorigin src="https://unpkg.com/graphiql@3.8.3/graphiql.min.js"
      integrity="sha384-HbRVEFG0JGJZeAHCJ9Xm2+tpknBQ7QZmNlO/DgZtkZ0aJSypT96YYGRNod99l9Ie"></script>
    <script crossorigin src="https://unpkg.com/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js"
      integrity="sha384-2oonKe47vfHIZnmB6ZZ10vl7T0Y+qrHQF2cmNTaFDuPshpKqpUMGMc9jgj9MLDZ9"></script>
    <script>
      // Queries and mutations: HTTP POST to this page's own URL. Subscriptions: a WebSocket
      // (graphql-transport-ws) to the same host and path, ws:// or wss:// as the page. The headers
      // tab goes with every HTTP request and, for a subscription, in the connection_init payload
      // (graphql-ws's connectionParams): a browser cannot set headers on a WebSocket handshake.
      const http = new URL(location.pathname, location.origin);
      const ws = new URL(http);
      ws.protocol = http.protocol === "https:" ? "wss:" : "ws:";
      const fetcher = GraphiQL.createFetcher({ url: http.href, subscriptionUrl: ws.href });
      const examples = /*EXAMPLES*/;

      ReactDOM.createRoot(document.getElementById("graphiql")).render(
        React.createElement(GraphiQL, {
          fetcher,
          defaultTabs: examples.map((query) => ({ query })),
          defaultEditorToolsVisibility: true,
          isHeadersEditorEnabled: true,
          inputValueDeprecation: true,
          plugins: [GraphiQLPluginExplorer.explorerPlugin()],
        }),
      );
    </script>
  </body>
</html>
"""


def asset_dir() -> Path:
    return Path(os.environ.get("GRAPHIQL_ASSETS_DIR") or Path(sys.prefix) / "share" / "graphiql")


def cdn_files(html: str) -> list[str]:
    """Paths after unpkg.com/ that the page loads, e.g. ``graphiql@3.8.3/graphiql.min.js``."""
    return sorted(set(re.findall(re.escape(CDN) + r'([^"\'\s]+)', html)))


def package_of(path: str) -> str:
    """``@scope/name@1.0/x.js`` -> ``@scope/name@1.0``; ``name@1.0/x.js`` -> ``name@1.0``."""
    parts = path.split("/")
    return "/".join(parts[:2]) if path.startswith("@") else parts[0]


def page_html() -> str:
    """The GraphiQL page with its example tabs, pointing at local copies when they are all present."""
    examples = json.dumps(list(EXAMPLES.values())).replace("</", "<\\/")  # safe inside <script>
    html = PAGE.replace("/*EXAMPLES*/", examples)
    root = asset_dir()
    if all((root / f).is_file() for f in cdn_files(PAGE)):
        return html.replace(CDN, PREFIX)
    return html


def fetch(dest: Path | None = None) -> None:
    dest = dest or asset_dir()
    files = cdn_files(PAGE)
    missing = sorted({package_of(f) for f in files if not (dest / f).is_file()})
    with tempfile.TemporaryDirectory() as tmp:
        for spec in missing:
            out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            with tarfile.open(Path(tmp) / out) as tgz:
                for member in tgz.getmembers():
                    if member.isfile() and member.name.startswith("package/"):
                        target = dest / spec / member.name.removeprefix("package/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        data = tgz.extractfile(member)
                        if data is not None:
                            target.write_bytes(data.read())
    absent = [f for f in files if not (dest / f).is_file()]
    if absent:
        raise SystemExit(f"GraphiQL assets still missing after npm pack: {absent}")
    print(f"GraphiQL assets in {dest} ({len(files)} files)")


if __name__ == "__main__":
    fetch()
