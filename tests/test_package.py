"""The package installs by itself: the wheel built from this tree, installed WITHOUT extras in a fresh
venv, imports every module of ``inference`` and ``graphql_api``, serves GraphiQL (its page and its
scripts from the wheel: no npm, no CDN) in remote mode, and its console script's ``--help`` lists
every setting. A runtime dependency missing from ``pyproject.toml`` fails the import test.

Marked ``package`` (deselect with ``-m "not package"``); needs no model: the API runs in remote mode
(``INFERENCE_URL`` at a loopback port nobody listens on). The venv lies in
``~/.cache/smollm-graphql/wheel-venv-<hash>``, keyed on what decides its contents (the wheel's
declared dependencies, the Python and the torch pin), so a second run reuses it and only reinstalls
the wheel, and only when its files changed. It gets torch first (``TORCH``: this machine's pip
config resolves it to the CPU wheel on disk, as the Makefile does), then the wheel with its
dependencies; pip's own cache keeps the downloads. A first run takes 1 to 3 minutes, a later one
seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from graphql_api.http import graphiql
from graphql_api.settings import ApiSettings
from inference.engine.config import EngineConfig

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "smollm-graphql"
TORCH = "torch==2.13.0"  # as the Makefile: the CPU build on this machine's disk, installed before the wheel
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "inference", "graphql_api", "http_common")  # what the build reads
KEEP_VENVS = 2  # the current venv and the newest other (another checkout, or the tree before an edit)
# Alembic's env.py runs migrations when imported: Alembic runs it, nothing imports it.
SCRIPTS = {"graphql_api.jobs.migrations.env"}
UNUSED_URL = "http://127.0.0.1:9"  # the discard port: nobody listens there


def run(*args: str | Path, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def wheel_digest(wheel: Path) -> str:
    """SHA-256 over the wheel's file names and contents (not the zip's timestamps)."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as z:
        for name in sorted(z.namelist()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(z.read(name)).digest())
    return digest.hexdigest()


def requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Python and Requires-Dist lines: what pip installs with it."""
    with zipfile.ZipFile(wheel) as z:
        metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    return sorted(line for line in metadata.splitlines() if line.startswith(("Requires-Dist:", "Requires-Python:")))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built (as ``pip wheel --no-deps .``) from a copy of the tree, so the build's own
    files (build/, *.egg-info) never land in the checkout that others share."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.o", "_kernels*"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", out, src)
    (built,) = out.glob("smollm_graphql-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Iterator[Path]:
    """A venv with the wheel installed without extras (and torch, installed first): its directory."""
    CACHE.mkdir(parents=True, exist_ok=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = hashlib.sha256(json.dumps([py, TORCH, requirements(wheel)]).encode()).hexdigest()[:16]
    path = CACHE / f"wheel-venv-{key}"
    python = path / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python]  # this venv's pip, working on the fresh one
    with open(CACHE / "wheel-venv.lock", "w") as lock:  # make test may run in two shells at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        ready, installed = path / ".ready", path / ".wheel"
        if not ready.exists():
            shutil.rmtree(path, ignore_errors=True)
            run(sys.executable, "-m", "venv", "--without-pip", path)
            run(*pip, "install", "--quiet", TORCH)
            run(*pip, "install", "--quiet", wheel)
            installed.write_text(wheel_digest(wheel))
            ready.touch()
        elif installed.read_text() != wheel_digest(wheel):  # same dependencies, other files: the wheel alone
            run(*pip, "install", "--quiet", "--no-deps", "--force-reinstall", wheel)
            installed.write_text(wheel_digest(wheel))
        ready.touch()  # its time orders the venvs for pruning
        others = sorted((p for p in CACHE.glob("wheel-venv-*") if p.is_dir() and p != path),
                        key=lambda p: (p / ".ready").stat().st_mtime if (p / ".ready").exists() else 0, reverse=True)
        for old in others[KEEP_VENVS - 1:]:
            shutil.rmtree(old, ignore_errors=True)
        yield path


def in_venv(venv: Path, code: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with the venv's Python, isolated (-I: neither this checkout nor PYTHONPATH on sys.path),
    from an empty directory, in remote mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"INFERENCE_URL": UNUSED_URL}
    cwd = venv / "cwd"
    cwd.mkdir(exist_ok=True)
    return run(venv / "bin" / "python", "-I", "-c", code, timeout=timeout, env=env, cwd=cwd)


IMPORT_ALL = """
import importlib, json, pkgutil, sys, traceback
failed, names = [], []
for top in ("inference", "graphql_api", "http_common"):
    package = importlib.import_module(top)
    assert package.__file__.startswith(sys.prefix), f"{top} from {package.__file__}, not the venv"
    names.append(top)
    for info in pkgutil.walk_packages(package.__path__, top + "."):
        if info.name in SCRIPTS:
            continue
        names.append(info.name)
        try:
            importlib.import_module(info.name)
        except BaseException:
            failed.append(f"{info.name}: {traceback.format_exc(limit=-2)}")
print(json.dumps({"names": names, "failed": failed}))
"""


def test_packaged_graphiql_assets_are_the_bytes_the_page_names():
    """Every file the page loads is in the package, with the bytes its integrity hash names, and each
    package's license beside them."""
    assert graphiql.verify(graphiql.PACKAGED) == []
    specs = {graphiql.package_of(f) for f in graphiql.cdn_files(graphiql.PAGE)}
    assert len(specs) == 4 and all((graphiql.PACKAGED / graphiql.license_file(s)).is_file() for s in specs)


@pytest.mark.package
def test_every_module_imports_from_the_wheel_without_extras(venv: Path):
    done = in_venv(venv, IMPORT_ALL.replace("SCRIPTS", repr(SCRIPTS)))
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["failed"], "modules that do not import from the wheel without extras:\n" + "\n".join(report["failed"])
    ours = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
            for top in ("inference", "graphql_api", "http_common") for p in (ROOT / top).rglob("*.py")
            if (p.parent / "__init__.py").exists()}
    assert ours - SCRIPTS <= set(report["names"]), f"not in the wheel: {sorted(ours - SCRIPTS - set(report['names']))}"


KERNELS = """
import json, torch
from inference.engine.kernels import load
from inference.engine.gguf_weights import Q4Weight
k = load()
g = torch.Generator().manual_seed(0)
d, m = torch.rand(16, 4, generator=g).half(), torch.rand(16, 4, generator=g).half()
w = Q4Weight(torch.randint(0, 256, (16, 64), dtype=torch.uint8, generator=g), d, m)
x = torch.randn(3, 128, generator=g)
print(json.dumps({"error": float((k.q4_1(x, w) - x @ w.dequantize().T).abs().max()), "module": k._lib.__name__}))
"""


@pytest.mark.package
def test_the_wheel_carries_the_block_kernels_built_at_install(wheel: Path, venv: Path):
    """Built when the wheel is built (setup.py), not at first use: nothing is compiled in the venv."""
    with zipfile.ZipFile(wheel) as z:
        assert any(n.startswith("inference/engine/_kernels") and n.endswith(".so") for n in z.namelist())
    report = json.loads(in_venv(venv, KERNELS).stdout.strip().splitlines()[-1])
    assert report["error"] < 1e-3


APP_IN_REMOTE_MODE = """
import hashlib, base64, json, sys
from starlette.testclient import TestClient
from graphql_api.app import create_app
from graphql_api.http import graphiql
from graphql_api.settings import ApiSettings

app = create_app(ApiSettings())
assert ApiSettings().inference_url, "remote mode"
client = TestClient(app)
page = client.get("/graphql", headers={"accept": "text/html"})
assert page.status_code == 200 and "GraphiQL" in page.text, page.status_code
assert "unpkg.com" not in page.text, "the page loads its scripts from a CDN"
served = {}
for path, sri in graphiql.integrity(graphiql.PAGE).items():
    asset = client.get(graphiql.PREFIX + path)
    assert asset.status_code == 200, (path, asset.status_code)
    served[path] = graphiql.sri(asset.content) == sri
    assert graphiql.PREFIX + path in page.text
# A multipart request (a batch job's file): the form parser is installed.
upload = client.post("/graphql", files={"0": ("a.jsonl", b"{}", "application/jsonl")},
                     data={"operations": json.dumps({"query": "{ __typename }"}), "map": json.dumps({})})
heavy = [m for m in ("torch", "transformers") if m in sys.modules]
print(json.dumps({"served": served, "upload": upload.status_code, "heavy": heavy, "assets": str(graphiql.asset_dir())}))
"""


@pytest.mark.package
def test_the_wheel_serves_graphiql_in_remote_mode_without_npm_or_torch(venv: Path):
    report = json.loads(in_venv(venv, APP_IN_REMOTE_MODE).stdout.strip().splitlines()[-1])
    assert report["served"] and all(report["served"].values()), report["served"]
    assert report["assets"].startswith(str(venv)), report["assets"]
    assert report["upload"] < 500, report
    assert report["heavy"] == [], f"remote mode loaded {report['heavy']}"


def flags_of(cls: type[BaseSettings]) -> list[tuple[str, str]]:
    """Each setting's flag and environment variable, as --help must show them."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [(f"--{name.replace('_', '-')}", (prefix + name).upper()) for name in cls.model_fields]


def lacking(text: str, *classes: type[BaseSettings]) -> list[tuple[str, str]]:
    """The settings of ``classes`` whose flag or environment variable ``text`` (a --help) does not show."""
    words = " ".join(text.split())  # argparse wraps help lines, "[env:" and its name included
    return [f for cls in classes for f in flags_of(cls) if f[0] not in words or f"[env: {f[1]}]" not in words]


@pytest.mark.package
def test_the_console_script_lists_every_setting(venv: Path):
    script = venv / "bin" / "smollm-graphql"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    top = run(script, "--help", env=env, cwd=venv).stdout
    assert all(c in top for c in ("serve", "serve-inference", "warm", "keys")), top
    serve = run(script, "serve", "--help", env=env, cwd=venv).stdout
    assert not lacking(serve, ApiSettings, EngineConfig), f"serve --help lacks {lacking(serve, ApiSettings, EngineConfig)}:\n{serve}"
    assert "--no-graphiql" in serve  # booleans as --x / --no-x
    warm = run(script, "warm", "--help", env=env, cwd=venv).stdout
    assert not lacking(warm, EngineConfig), warm
    # The service's settings (INFERENCE_*: its module imports torch, so it is not imported here) and the engine's.
    service = run(script, "serve-inference", "--help", env=env, cwd=venv).stdout
    assert "[env: INFERENCE_PORT]" in " ".join(service.split()) and "--no-generate-batch" in service, service
    assert not lacking(service, EngineConfig), service
    key = run(script, "keys", "new", "ci", env=env, cwd=venv).stdout.splitlines()
    assert len(key) == 2 and key[1].startswith("ci:"), key
    module = run(venv / "bin" / "python", "-I", "-m", "graphql_api", "--help", env=env, cwd=venv).stdout
    assert not lacking(module, ApiSettings), module  # python -m graphql_api is smollm-graphql serve
