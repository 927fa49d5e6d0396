"""GraphiQL served with its scripts from this server, so the IDE works without internet access.

Strawberry's GraphiQL page loads React and GraphiQL from unpkg.com. ``fetch`` (run by the set-up)
takes exactly the package versions that page names from the npm registry with ``npm pack`` and
keeps their files under ``<venv>/share/graphiql/<name>@<version>/``. The app serves them at
``/graphiql-assets/`` and points the page there; the files are the same bytes, so the page's
integrity hashes still hold. Without them the page falls back to unpkg.com.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from strawberry.http.ides import get_graphql_ide_html

CDN = "https://unpkg.com/"
PREFIX = "/graphiql-assets/"


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
    """The GraphiQL page, pointing at local copies when they are all present."""
    html = get_graphql_ide_html(graphql_ide="graphiql")
    root = asset_dir()
    if all((root / f).is_file() for f in cdn_files(html)):
        return html.replace(CDN, PREFIX)
    return html


def fetch(dest: Path | None = None) -> None:
    dest = dest or asset_dir()
    files = cdn_files(get_graphql_ide_html(graphql_ide="graphiql"))
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
                        target.write_bytes(tgz.extractfile(member).read())
    absent = [f for f in files if not (dest / f).is_file()]
    if absent:
        raise SystemExit(f"GraphiQL assets still missing after npm pack: {absent}")
    print(f"GraphiQL assets in {dest} ({len(files)} files)")


if __name__ == "__main__":
    fetch()
