"""AI reply benchmark: the ``ai_reply`` path's own overhead, from job claim to Send API request.

Usage::

    python bench/ai.py [--n 300] [--warmup 20] [--json] [--profile PATH]

What one run does (one process, everything on 127.0.0.1):

1. Starts the Instagram sandbox, the real daemon runtime on a fresh SQLite file
   (``tests/sending_harness.py``) and the fake Gemini server (``tests/fake_gemini.py``, which
   answers at once), with an ``ai_reply: auto`` workflow on the fallback trigger,
   ``ai.base_url`` at the fake and a dummy key in ``INSTASET_BENCH_GEMINI_KEY``.
2. Runs the worker as in production (``Worker.run``: wake-ups, concurrency 8) and sends
   ``--warmup + --n`` DMs from distinct users, one at a time: each waits for its reply at the
   sandbox and for the daemon to go idle before the next, so nothing queues behind anything.
3. For each ``ai_reply`` job it records: the claim (clock read just before the claiming
   statement, the worker's ``_claim`` wrapped; an ``ai_reply`` job is at_once: inserted
   leased to the worker that processed the DM and run by that task, with no claiming
   statement, so its claim is the moment the DM's job returned it: ``_run_one`` is wrapped),
   the handler's start
   and end (the handler in ``rt.handlers["ai_reply"]`` is wrapped), the SDK call as the
   client sees it (``GeminiResponder.answer`` wrapped), the request's arrival at and the
   response leaving the fake (a subclass of ``FakeGemini``), and the Send API request's
   arrival at the sandbox (its transcript's ``at``). All on the harness clock (wall time).
4. Baseline: a bare aiohttp POST of the same body to the same fake, ``--n`` times.
5. The same DMs again with no key: the offline responder path.

"own overhead" = total (claim -> Send API request) - time inside the fake (arrival -> response).
PASS when its p50 < 15 ms (issue 5). Exit 0 when the run completed, PASS or FAIL (a benchmark,
not a test); 2 when the harness could not run (a reply never arrived).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instaset.ai.answer import Answer
from instaset.ai.feature import install_feature
from instaset.ai.prompt import Prompt
from instaset.config import AIConfig
from instaset.store.jobs import Job
from tests.fake_gemini import FakeGemini
from tests.sending_harness import Harness, open_harness

KEY_ENV = "INSTASET_BENCH_GEMINI_KEY"
TARGET_MS = 15.0
WORKFLOW = {"name": "ai", "trigger": {"fallback": True}, "actions": [{"ai_reply": "auto"}]}
AI = {
    "persona": "I'm Maya, a strength coach. Warm, short, one emoji max.",
    "facts": ["1:1 coaching is $90 per session", "Book a call at https://maya.fit/book"],
    "examples": [{"message": "do you do online coaching?",
                  "reply": "Yes! All my coaching is online 💪"}],
    "timeout_ms": 5000,
}
STEP_TIMEOUT = 10.0


class TimedFake(FakeGemini):
    """The fake Gemini, stamping each request's arrival (handler entered: headers parsed)
    and the moment its response is handed back to aiohttp."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock = clock
        self.spans: list[tuple[float, float]] = []

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        t0 = self.clock()
        resp = await super()._generate(request)
        self.spans.append((t0, self.clock()))
        return resp


@dataclass
class Sample:
    claim: float = 0.0
    claimed: float = 0.0  # the claiming statement returned
    start: float = 0.0
    end: float = 0.0
    send: float = 0.0
    sdk: float | None = None  # GeminiResponder.answer, client side (s)
    fake: tuple[float, float] | None = None


@dataclass
class PathResult:
    samples: list[Sample] = field(default_factory=list)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile."""
    s = sorted(values)
    if not s:
        return float("nan")
    rank = max(1, -(-len(s) * q // 100))
    return s[int(rank) - 1]


def stats(values_s: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"p50": pct(ms, 50), "p90": pct(ms, 90), "p99": pct(ms, 99), "max": max(ms),
            "n": float(len(ms))}


async def _idle(h: Harness) -> None:
    """Until the sandbox has delivered its webhooks and no job is running or due."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while time.monotonic() < deadline:
        await h.sandbox.drain()
        row = await h.rt.db.fetchone(
            "SELECT count(*) AS c FROM jobs WHERE state = 'running'"
            " OR (state = 'ready' AND run_at <= ?)", (h.clock(),))
        if row is not None and row["c"] == 0:
            return
        await asyncio.sleep(0.005)
    raise TimeoutError("the daemon did not go idle")


async def _send_at(h: Harness, igsid: str, seen: int, task: asyncio.Task[None]) -> float:
    """The sandbox ``at`` of the first Send API message request to ``igsid`` recorded after
    index ``seen``. Scans only the new tail of the transcript: a full scan per poll (as
    ``Harness.graph_sends`` does) is O(history) and steals the event loop from the daemon."""
    deadline = time.monotonic() + STEP_TIMEOUT
    while True:
        tail = h.sandbox.transcript[seen:]
        for r in tail:
            if (r.method == "POST" and r.route.endswith("/messages") and "message" in r.json
                    and igsid in json.dumps(r.json.get("recipient"))):
                return r.at
        seen += len(tail)
        if time.monotonic() > deadline or task.done():
            raise RuntimeError(f"no reply reached the sandbox for {igsid}")
        await asyncio.sleep(0.001)


async def run_path(tmp: Path, n: int, warmup: int, *, gemini: bool, name: str,
                   profile: cProfile.Profile | None = None,
                   fake_out: list[TimedFake] | None = None) -> PathResult:
    """Send ``warmup + n`` DMs through the ai_reply path; the last ``n`` samples."""
    result = PathResult()
    async with contextlib.AsyncExitStack() as stack:
        h = await stack.enter_async_context(open_harness(
            tmp, name=name, workflows=[WORKFLOW],
            rate_limits={"text_per_second": 100000}))
        fake = TimedFake(h.clock)
        await stack.enter_async_context(fake)
        if fake_out is not None:
            fake_out.append(fake)
        cfg = {**AI, "base_url": fake.url,
               "api_key_env": KEY_ENV if gemini else "INSTASET_BENCH_NO_SUCH_KEY"}
        h.rt.config = h.rt.config.model_copy(update={"ai": AIConfig.model_validate(cfg)})
        # typing_after far above any answer: the fake answers at once, no typing indicator.
        feature = install_feature(h.rt, typing_after=30.0)
        responder = feature.replies.responder
        if gemini and responder is None:
            raise RuntimeError("no Gemini responder although the key is set")
        by_contact: dict[str, Sample] = {}
        worker = h.rt.worker

        claim_inner = worker._claim

        def stamp(jobs: list[Job], claim: float, claimed: float) -> list[Job]:
            for j in jobs:
                if j.kind == "ai_reply":
                    s = by_contact.setdefault(str(j.payload["contact_id"]), Sample())
                    s.claim, s.claimed = claim, claimed
            return jobs

        async def timed_claim(limit: int) -> list[Job]:
            t = h.clock()
            jobs = await claim_inner(limit)
            return stamp(jobs, t, h.clock())

        setattr(worker, "_claim", timed_claim)  # noqa: B010  (instance attribute on purpose)
        # An ai_reply job is at_once (the reply path): it is inserted already leased to the
        # worker, in the transaction that processed the DM (jobs.FollowUp), and that task runs
        # it right after: there is no claiming statement. Its "claim" is the moment the
        # cause's run returned it (where the old claim by key started).
        run_one_inner = worker._run_one

        async def timed_run_one(job: Job) -> list[Job]:
            follow = await run_one_inner(job)
            t = h.clock()
            return stamp(follow, t, t)

        setattr(worker, "_run_one", timed_run_one)  # noqa: B010  (instance attribute on purpose)
        inner = h.rt.handlers["ai_reply"]

        async def timed_handler(job: Job) -> None:
            s = by_contact.setdefault(str(job.payload["contact_id"]), Sample())
            s.start = h.clock()
            await inner(job)
            s.end = h.clock()

        h.rt.handlers["ai_reply"] = timed_handler
        current: list[Sample] = []
        if responder is not None:
            answer_inner = responder.answer

            async def timed_answer(prompt: Prompt, *, booking: bool = False) -> Answer:
                t0 = time.perf_counter()
                try:
                    return await answer_inner(prompt, booking=booking)
                finally:
                    if current:
                        current[-1].sdk = time.perf_counter() - t0

            setattr(responder, "answer", timed_answer)  # noqa: B010

        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            for i in range(warmup + n):
                igsid = f"{'7' if gemini else '8'}{i:015d}"
                sample = by_contact.setdefault(igsid, Sample())
                current.append(sample)
                spans = len(fake.spans)
                seen = len(h.sandbox.transcript)
                if profile is not None and i >= warmup:
                    profile.enable()
                await h.dm(igsid, f"hey! number {i} here. how much is 1:1 coaching?")
                sample.send = await _send_at(h, igsid, seen, task)
                if gemini:
                    if len(fake.spans) != spans + 1:
                        raise RuntimeError(f"DM {i}: {len(fake.spans) - spans} Gemini calls")
                    sample.fake = fake.spans[-1]
                if profile is not None and i >= warmup:
                    profile.disable()
                await _idle(h)
                if i >= warmup:
                    result.samples.append(sample)
        finally:
            stop.set()
            await asyncio.wait_for(task, timeout=STEP_TIMEOUT)
    return result


async def bare_baseline(fake: TimedFake, n: int, warmup: int) -> tuple[list[float], list[float]]:
    """A bare aiohttp POST of the last SDK request's body to the same fake: client-side
    seconds and the fake's own seconds per request."""
    last = fake.requests[-1]
    body = json.dumps(last.body).encode()
    url = fake.url + last.path
    headers = {"Content-Type": "application/json", "x-goog-api-key": "bench"}
    client: list[float] = []
    inside: list[float] = []
    async with aiohttp.ClientSession() as session:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.json()
            dt = time.perf_counter() - t0
            if i >= warmup:
                client.append(dt)
                a, b = fake.spans[-1]
                inside.append(b - a)
    return client, inside


def report(gem: PathResult, off: PathResult, bare: tuple[list[float], list[float]],
           n: int) -> dict[str, Any]:
    g = gem.samples
    rows: dict[str, dict[str, float]] = {
        "gemini.total (claim -> Send API request)": stats([s.send - s.claim for s in g]),
        "gemini.fake_gemini (arrival -> response)": stats(
            [s.fake[1] - s.fake[0] for s in g if s.fake]),
        "gemini.own_overhead (total - fake)": stats(
            [(s.send - s.claim) - (s.fake[1] - s.fake[0]) for s in g if s.fake]),
        "gemini.own_overhead, first half": stats(
            [(s.send - s.claim) - (s.fake[1] - s.fake[0]) for s in g[:len(g) // 2] if s.fake]
            or [float("nan")]),
        "gemini.own_overhead, second half": stats(
            [(s.send - s.claim) - (s.fake[1] - s.fake[0]) for s in g[len(g) // 2:] if s.fake]),
        "gemini.  claim statement": stats([s.claimed - s.claim for s in g]),
        "gemini.  claimed -> handler start": stats([s.start - s.claimed for s in g]),
        "gemini.  handler (start -> end)": stats([s.end - s.start for s in g]),
        "gemini.    SDK answer() client side": stats([s.sdk for s in g if s.sdk is not None]),
        "gemini.    handler - SDK answer()": stats(
            [(s.end - s.start) - s.sdk for s in g if s.sdk is not None]),
        "gemini.  handler end -> Send API request": stats([s.send - s.end for s in g]),
        "baseline.bare aiohttp POST client side": stats(bare[0]),
        "baseline.fake_gemini (arrival -> response)": stats(bare[1]),
        "offline.total (claim -> Send API request)": stats([s.send - s.claim for s in off.samples]),
        "offline.  handler (start -> end)": stats([s.end - s.start for s in off.samples]),
        "offline.  handler end -> Send API request": stats(
            [s.send - s.end for s in off.samples]),
    }
    p50 = rows["gemini.own_overhead (total - fake)"]["p50"]
    return {"n": n, "python": platform.python_version(), "platform": platform.platform(),
            "rows_ms": rows, "own_overhead_p50_ms": p50, "target_ms": TARGET_MS,
            "pass": p50 < TARGET_MS}


def print_report(out: dict[str, Any]) -> None:
    print(f"instaset ai_reply benchmark: n={out['n']} per path, Python {out['python']}")
    print(f"{'ms':<44}{'p50':>8}{'p90':>8}{'p99':>8}{'max':>8}")
    for label, r in out["rows_ms"].items():
        print(f"{label:<44}{r['p50']:8.2f}{r['p90']:8.2f}{r['p99']:8.2f}{r['max']:8.2f}")
    verdict = "PASS" if out["pass"] else "FAIL"
    print(f"{verdict}: own overhead p50 {out['own_overhead_p50_ms']:.2f} ms "
          f"(target < {out['target_ms']:.0f} ms)")


async def main_async(args: argparse.Namespace) -> int:
    os.environ[KEY_ENV] = "bench-dummy-key"
    profile = cProfile.Profile() if args.profile else None
    fakes: list[TimedFake] = []
    with tempfile.TemporaryDirectory(prefix="instaset-bench-ai-") as d:
        tmp = Path(d)
        try:
            gem = await run_path(tmp, args.n, args.warmup, gemini=True, name="gemini",
                                 profile=profile, fake_out=fakes)
            off = await run_path(tmp, args.n, args.warmup, gemini=False, name="offline")
            # A fresh fake for the baseline, fed the body the SDK sent.
            fake = TimedFake(time.perf_counter)
            async with fake:
                fake.requests.append(fakes[0].requests[-1])
                bare = await bare_baseline(fake, args.n, args.warmup)
        except (RuntimeError, TimeoutError) as exc:
            print(f"bench/ai.py: harness failure: {exc}", file=sys.stderr)
            return 2
    out = report(gem, off, bare, args.n)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_report(out)
    if profile is not None:
        profile.dump_stats(args.profile)
        buf = io.StringIO()
        pstats.Stats(profile, stream=buf).sort_stats("cumulative").print_stats(40)
        print(f"\ncProfile of the measured Gemini phase (saved to {args.profile}):",
              file=sys.stderr)
        print(buf.getvalue(), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--n", type=int, default=300, help="measured DMs per path")
    p.add_argument("--warmup", type=int, default=20, help="DMs run before measuring")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--profile", metavar="PATH", help="cProfile the measured Gemini phase")
    args = p.parse_args(argv)
    if args.n < 1 or args.warmup < 0:
        p.error("--n must be >= 1 and --warmup >= 0")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
