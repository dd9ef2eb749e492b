"""A judge behind an OpenAI-compatible chat-completions endpoint, asked concurrently.

A thin `openai` async client: one request per (rubric, completion), at most `concurrency` in
flight, the client's own retries and timeout. Nothing here raises on the judge's behaviour: an
unreachable server, a refused request, a timeout or a reply that is not a score each becomes a
`Verdict` with its `failure` named, for the caller to count and score as documented.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import openai

from medrl.data.records import QARecord
from medrl.rewards.judge.cache import JudgeCache, cache_key
from medrl.rewards.judge.rubrics import Rubric, parse_score, render_judge_messages
from medrl.utils.config import defaults_from_config

T = TypeVar("T")

FAILURES = ("unparsed", "timeout", "unreachable", "refused")


@dataclass(frozen=True)
@defaults_from_config("judge/local", "settings", keep=("base_url",))
class JudgeSettings:
    """The `judge` config group: where the judge is and how it is asked.

    base_url:      the OpenAI-compatible API root, e.g. http://127.0.0.1:8000/v1.
    model:         the model name the server expects; null: the one model the server lists
                   (GET /models), e.g. the local folder `transformers serve` was started with.
    api_key_env:   the *name* of the environment variable holding the key (never the key);
                   null for servers without one.
    concurrency:   requests in flight at once.
    timeout_s:     seconds per request attempt; retries: further attempts after a timeout or a
                   connection error (the openai client's own backoff).
    temperature, max_tokens: of the judge's reply; 0 makes a greedy judge deterministic.
    """

    # Defaults: conf/judge/local.yaml's judge.settings (hosted.yaml changes some); base_url has
    # none (the yaml's is an interpolation).
    base_url: str
    model: str | None
    api_key_env: str | None
    concurrency: int
    timeout_s: float
    retries: int
    temperature: float
    max_tokens: int

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"judge.concurrency must be >= 1, got {self.concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"judge.timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"judge.retries must be >= 0, got {self.retries}")
        if self.max_tokens < 1:
            raise ValueError(f"judge.max_tokens must be >= 1, got {self.max_tokens}")

    def api_key(self) -> str:
        """The key from the named environment variable ("none" when no key is needed)."""
        if self.api_key_env is None:
            return "none"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ValueError(
                f"judge.api_key_env={self.api_key_env!r}: that environment variable is not set; "
                "export it, or set judge.api_key_env=null for a server without a key"
            )
        return key


@dataclass(frozen=True)
class Verdict:
    """One judgement: score in [0, 1] or None; failure one of FAILURES or None."""

    score: float | None
    reply: str | None
    failure: str | None

    def to_json(self) -> dict:
        return {"score": self.score, "reply": self.reply, "failure": self.failure}


@dataclass(frozen=True)
class JudgeRequest:
    """One (record, answer) to grade under a rubric."""

    record: QARecord
    answer: str


class JudgeClient:
    """Asks the judge for verdicts, through the cache."""

    def __init__(self, settings: JudgeSettings, cache: JudgeCache | None = None) -> None:
        self.settings = settings
        self.cache = cache if cache is not None else JudgeCache()
        self._model = settings.model

    @property
    def model(self) -> str:
        """The judge model's name: judge.model, else the only model the server lists (asked
        once). Raises when the server is down or serves several models, naming the key."""
        if self._model is None:
            s = self.settings
            client = openai.OpenAI(
                base_url=s.base_url, api_key=s.api_key(), timeout=s.timeout_s, max_retries=s.retries
            )
            try:
                served = [m.id for m in client.models.list()]
            except openai.APIError as err:
                raise ConnectionError(
                    f"judge.base_url={s.base_url!r}: cannot list the served models ({err}); "
                    "start the judge server (make judge-server) or fix the URL"
                ) from err
            if len(served) != 1:
                raise ValueError(
                    f"judge.model=null but {s.base_url} serves {served or 'no model'}; name one "
                    "with judge.model=..."
                )
            self._model = served[0]
        return self._model

    def judge(self, rubric: Rubric, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        """A verdict per request, in order: cached ones replayed, the rest asked concurrently
        and cached. A server that cannot even name its model gives `unreachable` verdicts,
        not cached (no key without the model)."""
        try:
            self.model  # noqa: B018 (resolves judge.model=null once)
        except ConnectionError:
            return [Verdict(None, None, "unreachable") for _ in requests]
        keys = [cache_key(self.model, rubric, r.record, r.answer) for r in requests]
        verdicts: list[Verdict | None] = [
            None if (hit := self.cache.get(key)) is None else Verdict(**hit) for key in keys
        ]
        todo = [i for i, verdict in enumerate(verdicts) if verdict is None]
        if todo:
            fresh = run_to_completion(self._ask_all(rubric, [requests[i] for i in todo]))
            for i, verdict in zip(todo, fresh, strict=True):
                verdicts[i] = verdict
            self.cache.put_many([(keys[i], verdicts[i].to_json()) for i in todo])
        return [v for v in verdicts if v is not None]

    async def _ask_all(self, rubric: Rubric, requests: Sequence[JudgeRequest]) -> list[Verdict]:
        s = self.settings
        client = openai.AsyncOpenAI(
            base_url=s.base_url, api_key=s.api_key(), timeout=s.timeout_s, max_retries=s.retries
        )
        limit = asyncio.Semaphore(s.concurrency)

        async def ask(request: JudgeRequest) -> Verdict:
            messages = render_judge_messages(rubric, request.record, request.answer)
            async with limit:
                return await self._ask_one(client, messages)

        try:
            return list(await asyncio.gather(*(ask(r) for r in requests)))
        finally:
            await client.close()

    async def _ask_one(self, client: openai.AsyncOpenAI, messages: list[dict]) -> Verdict:
        s = self.settings
        try:
            response = await client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=s.temperature,
                max_tokens=s.max_tokens,
            )
        except openai.APITimeoutError:
            return Verdict(None, None, "timeout")
        except openai.APIConnectionError:
            return Verdict(None, None, "unreachable")
        except openai.APIStatusError as err:
            return Verdict(None, f"HTTP {err.status_code}", "refused")
        reply = response.choices[0].message.content if response.choices else None
        score = parse_score(reply)
        return Verdict(score, reply, None if score is not None else "unparsed")


def run_to_completion(coroutine: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coroutine)`, also from code already inside an event loop (a notebook, an
    async trainer), where asyncio.run refuses: there it runs on a fresh loop in one worker
    thread, and this call waits for it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()
