"""Command lines over the settings classes: every setting is a flag, and still its environment variable.

A ``Command`` names a subcommand, the settings classes its flags come from and what it runs. The
classes are named by a function, called only for the subcommand that runs, so ``--help`` of one
never imports another's (the inference service's settings live beside torch). ``run_cli`` builds
one argparse parser with a subparser per command and adds the chosen command's settings through
pydantic-settings' ``CliSettingsSource``: kebab-case flags (``--kv-cache-tokens``), ``--x`` and
``--no-x`` for booleans, each flag's environment variable and default in its help line. A setting
is taken from its flag, else its environment variable, else its default.

This module holds the inference tier's commands (``serve-inference``, ``warm``) for
``python -m inference`` and for ``smollm-graphql`` (``graphql_api.cli``), which adds the API's.
It imports neither torch nor the API.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NoReturn, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, CliSettingsSource

from http_common import tracing
from http_common.logs import configure_logging

from .engine.config import EngineConfig

S = TypeVar("S", bound=BaseSettings)

Source = CliSettingsSource[argparse.ArgumentParser]


# A command's settings: each class with the title of its group of flags in --help.
SettingsGroups = Sequence[tuple[type[BaseSettings], str]]


def settings_source(cls: type[BaseSettings], parser: argparse.ArgumentParser, title: str, prog: str) -> Source:
    """``cls``'s fields as flags of ``parser``, in a group titled ``title``: kebab case, ``--x/--no-x`` for
    booleans, with the environment variable and the default in each help line. The source never parses:
    ``Parsed.settings`` hands it the namespace that ``parser`` made."""
    group = parser.add_argument_group(title)
    return CliSettingsSource(cls, root_parser=group, cli_prog_name=prog, cli_kebab_case=True,
                             cli_implicit_flags=True, cli_show_env_vars=True, cli_hide_none_type=True)


class Parsed:
    """A parsed command line: its namespace, and each settings class built from flags over the environment."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 sources: dict[type[BaseSettings], Source]) -> None:
        self.parser = parser
        self.namespace = namespace
        self._sources = sources

    def settings(self, cls: type[S]) -> S:
        """``cls`` from this command line's flags, the environment and the defaults; a setting that does
        not validate ends the process with exit status 2 and a message naming its flag and variable."""
        try:
            return cls(_cli_settings_source=self._sources[cls](parsed_args=self.namespace))
        except ValidationError as exc:
            prefix = str(cls.model_config.get("env_prefix", ""))
            lines = []
            for error in exc.errors():
                name = ".".join(str(part) for part in error["loc"])
                where = f"--{name.replace('_', '-')} / {(prefix + name).upper()}: " if name else ""
                lines.append(f"{where}{error['msg']}" + (f" (got {error['input']!r})" if name else ""))
            self.error("invalid settings:\n  " + "\n  ".join(lines))

    def error(self, message: str) -> NoReturn:
        """Print the command's usage and ``message``, and exit with status 2 (argparse's way)."""
        self.parser.error(message)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, the settings classes it takes as flags, and what it runs."""

    name: str
    help: str
    run: Callable[[Parsed], int | None]
    settings: Callable[[], SettingsGroups] = lambda: ()
    arguments: Callable[[argparse.ArgumentParser], None] | None = None  # arguments that are not settings
    description: str = ""


def run_cli(commands: Sequence[Command], argv: Sequence[str] | None = None, *, prog: str,
            description: str = "") -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``) as one of ``commands`` and run it; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    root = argparse.ArgumentParser(prog=prog, description=description)
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((c for c in commands if argv[:1] == [c.name]), None)
    sources: dict[type[BaseSettings], Source] = {}
    chosen_parser = root
    for command in commands:
        if command is not chosen:  # listed in the root's help; its arguments are added only when it runs
            sub.add_parser(command.name, help=command.help)
            continue
        classes = command.settings()
        chosen_parser = sub.add_parser(
            command.name, help=command.help, description=command.description or command.help,
            usage=f"{prog} {command.name} [options]" if classes else None)
        if command.arguments is not None:
            command.arguments(chosen_parser)
        for cls, title in classes:
            sources[cls] = settings_source(cls, chosen_parser, title, f"{prog} {command.name}")
    namespace = root.parse_args(argv)
    assert chosen is not None  # argparse has refused any other first word
    return chosen.run(Parsed(chosen_parser, namespace, sources)) or 0


def serve_inference(parsed: Parsed) -> int:
    """The engine as an HTTP service (OpenAI-compatible, and ``/generate_batch``) until stopped."""
    import uvicorn

    from http_common.server import uvicorn_config

    from .engine.async_engine import AsyncEngine
    from .engine.llm_engine import LLMEngine
    from .service.app import ServiceSettings, create_service

    settings = parsed.settings(ServiceSettings)
    engine_config = parsed.settings(EngineConfig)
    configure_logging(settings.log_format)
    tracing.configure_from_env("smollm-inference")
    started = time.perf_counter()
    engine = AsyncEngine(LLMEngine.from_config(engine_config))
    print(f"Inference service ready in {time.perf_counter() - started:.1f} s at "
          f"http://{settings.host}:{settings.port}/v1/chat/completions", flush=True)
    config = uvicorn_config(create_service(engine, settings), settings.host, settings.port,
                            read_timeout_s=settings.read_timeout_s, max_message_bytes=settings.max_body_bytes)
    try:
        uvicorn.Server(config).run()
    finally:
        tracing.shutdown()
    return 0


def warm(parsed: Parsed) -> int:
    """Build the model cache once: dequantize a GGUF, split its blocks, time the C kernels."""
    from .engine.model_loader import cached_dir, locate_model

    config = parsed.settings(EngineConfig)
    source = locate_model(config.model_path)
    started = time.perf_counter()
    where = cached_dir(source, config.model_cache_dir) if source.kind == "gguf" else source.path
    if source.kind == "gguf":  # WEIGHTS=native: split the GGUF blocks, time the kernels, once
        from .engine.llm_engine import LLMEngine

        engine = LLMEngine.from_config(config.model_copy(update={"kv_cache_tokens": config.max_model_len}))
        print(f"weights: {engine.weights.mode} ({engine.weights.reason})")
    print(f"model ready at {where} ({time.perf_counter() - started:.1f} s)", flush=True)
    # The cache is written and closed. Tearing the interpreter down after timing the kernels
    # crashes in native thread teardown about half the time (no Python frame; the same at the
    # previous commit), which would fail set-up: leave without it.
    os._exit(0)


ENGINE_SETTINGS = "engine settings (EngineConfig)"


def _service_settings() -> SettingsGroups:
    from .service.settings import ServiceSettings

    return ((ServiceSettings, "inference service settings (ServiceSettings)"), (EngineConfig, ENGINE_SETTINGS))


SERVE_INFERENCE = Command(
    "serve-inference", "serve the engine over HTTP (OpenAI-compatible and /generate_batch)", serve_inference,
    settings=_service_settings,
    description="Serve the engine over HTTP: POST /v1/chat/completions (OpenAI-compatible), /generate_batch, "
                "/v1/models, /healthz, /readyz, /metrics. Settings: the service's (INFERENCE_*) and the engine's.")
WARM = Command(
    "warm", "build the model cache: dequantize the GGUF, split its blocks, time the C kernels", warm,
    settings=lambda: ((EngineConfig, ENGINE_SETTINGS),))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inference serve|warm``: the same commands as ``smollm-graphql serve-inference|warm``."""
    return run_cli([replace(SERVE_INFERENCE, name="serve"), WARM], argv, prog="python -m inference",
                   description="The inference tier alone (every setting is also an environment variable).")
