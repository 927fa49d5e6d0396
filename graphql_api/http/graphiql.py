"""GraphiQL served with its scripts from this server, so the IDE works without internet access.

The page is ours (``PAGE``), not Strawberry's: it opens with ready examples (``EXAMPLES``, one tab
each) and sends subscriptions over a WebSocket (graphql-transport-ws) to this server. It names the
exact package versions it loads from unpkg.com, with integrity hashes (the ones Strawberry
0.341's page uses). Those files ship inside this package as package data, under
``graphiql_assets/<name>@<version>/`` as on unpkg.com, with each package's license in
``graphiql_assets/LICENSES/``, so a plain ``pip install`` serves GraphiQL with no npm and no
network. The app serves them at ``/graphiql-assets/`` and ``page_html`` points the page there;
they are the same bytes, so the integrity hashes still hold (``verify`` checks, and a test).
``GRAPHIQL_ASSETS_DIR`` points elsewhere; where a file is missing the page falls back to unpkg.com.

``python -m graphql_api.http.graphiql`` is the maintainers' refresh: it takes the packages the page
names from the npm registry (``npm pack``), keeps only the files the page loads and their licenses,
and checks them against the integrity hashes. Set-up never runs it.

The WebSocket client is graphql-ws, which ``graphiql.min.js`` (3.8.3) bundles: GraphiQL's
``createFetcher`` uses it for a subscription when given ``subscriptionUrl``, and passes the
headers tab as the ``connection_init`` payload. So no other package is needed for streaming.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

CDN = "https://unpkg.com/"
PREFIX = "/graphiql-assets/"
# The files the page loads, as package data: <name>@<version>/<path>, as after unpkg.com/.
PACKAGED = Path(__file__).resolve().parent / "graphiql_assets"

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
    "tools": """\
# Tool calling: the answer is a call of one of the
# tools, its arguments valid against the schema.
# Send its result back as a TOOL turn in history
# (with toolCallId) to get the answer in text.
mutation ToolCall {
  chat(input: {
    chatId: "t"
    userPrompt: "What's the weather like in Paris today?"
    toolChoice: {mode: REQUIRED}
    tools: [{
      name: "get_weather"
      description: "Get the current weather in a city"
      parameters: {type: "object", required: ["city"], properties: {
        city: {type: "string"}
        unit: {enum: ["celsius", "fahrenheit"]}
      }}
    }]
    options: {maxTokens: 80}
  }) {
    __typename
    ... on ChatSuccess { finishReason toolCalls { id name arguments } }
    ... on ChatError { code message field }
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
    """Where the app serves ``/graphiql-assets/`` from: ``GRAPHIQL_ASSETS_DIR``, else the packaged copy."""
    return Path(os.environ.get("GRAPHIQL_ASSETS_DIR") or PACKAGED)


def cdn_files(html: str) -> list[str]:
    """Paths after unpkg.com/ that the page loads, e.g. ``graphiql@3.8.3/graphiql.min.js``."""
    return sorted(set(re.findall(re.escape(CDN) + r'([^"\'\s]+)', html)))


def integrity(html: str) -> dict[str, str]:
    """Path after unpkg.com/ -> its ``integrity`` attribute (``sha384-...``), for every file the page loads."""
    tags = re.findall(r'(?:src|href)="' + re.escape(CDN) + r'([^"]+)"\s+integrity="([^"]+)"', html)
    return dict(tags)


def sri(data: bytes) -> str:
    """The Subresource Integrity value of these bytes, as the page writes it."""
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def verify(root: Path) -> list[str]:
    """The page's files under ``root`` that are missing or whose bytes do not match the page's integrity hash."""
    expected = integrity(PAGE)
    return [f for f in cdn_files(PAGE) if not (root / f).is_file() or sri((root / f).read_bytes()) != expected.get(f)]


def license_file(spec: str) -> str:
    """Where ``spec``'s license lies under the assets: ``@graphiql/plugin-explorer@1.0.2`` ->
    ``LICENSES/graphiql-plugin-explorer-1.0.2.txt`` (no ``@``, which license-files globs refuse)."""
    return "LICENSES/" + spec.lstrip("@").replace("/", "-").replace("@", "-") + ".txt"


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


def fetch(dest: Path = PACKAGED, force: bool = False) -> None:
    """Take the page's files (and each package's LICENSE) from the npm registry into ``dest``.

    Only packages with a file missing are packed, unless ``force``; a package that ships no LICENSE
    keeps the one already in ``dest``. Raises SystemExit when a file is still missing or its bytes
    do not match the page's integrity hash."""
    files = cdn_files(PAGE)
    wanted: dict[str, list[str]] = {}  # package -> its files, relative to the package
    for f in files:
        wanted.setdefault(package_of(f), []).append(f.removeprefix(package_of(f) + "/"))
    specs = sorted(spec for spec, paths in wanted.items() if force or any(not (dest / spec / p).is_file() for p in paths))
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            out = subprocess.run(["npm", "pack", spec, "--silent", "--pack-destination", tmp],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            keep = {"package/" + p: dest / spec / p for p in wanted[spec]} | {"package/LICENSE": dest / license_file(spec)}
            with tarfile.open(Path(tmp) / out) as tgz:
                for member in tgz.getmembers():
                    if member.isfile() and member.name in keep:
                        target = keep[member.name]
                        target.parent.mkdir(parents=True, exist_ok=True)
                        data = tgz.extractfile(member)
                        if data is not None:
                            target.write_bytes(data.read())
    bad = verify(dest)
    if bad:
        raise SystemExit(f"GraphiQL assets missing or not matching the page's integrity hashes: {bad}")
    print(f"GraphiQL assets in {dest} ({len(files)} files, integrity checked)")


def main() -> None:
    """``python -m graphql_api.http.graphiql [--force] [--dest DIR]``: refresh the packaged assets from npm."""
    parser = argparse.ArgumentParser(prog="python -m graphql_api.http.graphiql",
                                     description="Refresh GraphiQL's packaged assets from the npm registry (maintainers only).")
    parser.add_argument("--dest", type=Path, default=PACKAGED, help=f"where to write them (default: {PACKAGED})")
    parser.add_argument("--force", action="store_true", help="pack every package again, not only those with a file missing")
    args = parser.parse_args()
    fetch(args.dest, force=args.force)


if __name__ == "__main__":
    main()
