"""The step loop's thread holds the process's only team of OpenMP threads.

libgomp keeps a team for every thread that ran a parallel region; with more of its threads alive
than CPUs it stops spinning between regions, and a decode step on another thread than the one
that loaded the model took twice as long (csrc/threads.c). Each check runs in a fresh interpreter,
so that no other test's threads are counted, and counts the process's OS threads
(``/proc/self/task``) once it holds still: a team of two is one thread besides its caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

#: ``threads()`` waits until the count holds for 0.3 s: loading leaves short-lived threads that end
#: on their own a moment later, while a team's threads stay until released.
COUNT = textwrap.dedent("""
    import os, time
    def threads():
        seen, since, deadline = None, time.monotonic(), time.monotonic() + 10
        while time.monotonic() < deadline:
            now = len(os.listdir('/proc/self/task'))
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= 0.3:
                break
            time.sleep(0.02)
        return seen
""")


def run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", COUNT + textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_release_threads_frees_the_calling_threads_team():
    pytest.importorskip("inference.engine._kernels")
    seen = run("""
        import json, torch
        from inference.engine.kernels import release_threads
        torch.set_num_threads(2)
        before = threads()
        torch.randn(512, 512) @ torch.randn(512, 512)  # a parallel region: this thread's team
        made = threads()
        release_threads()
        released = threads()
        torch.randn(512, 512) @ torch.randn(512, 512)  # the next region makes a new team
        print(json.dumps({"before": before, "made": made, "released": released, "again": threads()}))
    """)
    assert seen["made"] == seen["before"] + 1, seen
    assert seen["released"] == seen["before"], seen
    assert seen["again"] == seen["made"], seen


@pytest.mark.model
def test_loading_and_starting_the_engine_leave_the_calling_thread_no_team():
    pytest.importorskip("inference.engine._kernels")
    seen = run("""
        import asyncio, json, torch
        from inference.engine.async_engine import AsyncEngine
        from inference.engine.config import EngineConfig
        from inference.engine.kernels import release_threads
        from inference.engine.llm_engine import LLMEngine
        torch.set_num_threads(2)
        engine = LLMEngine.from_config(EngineConfig(weights="native", kv_cache_tokens=2048, max_model_len=2048))
        loaded = threads()
        release_threads()
        after_load = threads()  # unchanged: loading released its team already

        async def main():
            torch.randn(512, 512) @ torch.randn(512, 512)  # work on the event loop's thread makes it a team
            made = threads()
            ae = AsyncEngine(engine)
            await ae.start()
            started = threads()  # the loop's team released, the step loop's thread added
            await ae.stop()
            return made, started

        made, started = asyncio.run(main())
        print(json.dumps({"loaded": loaded, "after_load": after_load, "made": made, "started": started}))
    """)
    assert seen["after_load"] == seen["loaded"], seen
    assert seen["made"] == seen["loaded"] + 1, seen
    assert seen["started"] == seen["made"], seen  # one thread gone (the team), one come (the step loop)
