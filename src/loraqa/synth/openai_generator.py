"""Questions from any OpenAI-compatible chat endpoint: a hosted LLM, a local vLLM or Ollama, or
`loraqa serve` serving a question-generation adapter.

Two ways to ask:
- pairs: one request per passage asks for question-answer pairs as JSON, answers quoted from
  the passage (what an instruction-following LLM does well);
- questions: answer candidates are picked from the passage here (as the local generator does)
  and each is sent as the user message, the passage as the system message; the reply is the
  question. That is how `loraqa serve` reads a chat request, so a question-generation adapter it
  serves writes the questions.

The official `openai` client does the HTTP, with its own retries and exponential backoff on
429, 408, 409 and 5xx (honouring Retry-After); a thread pool bounds the requests in flight.
Every reply is read as raw bytes within a deadline (`timeout` from the moment its request is
sent to its last byte: an endpoint dripping a byte a second cannot hold a worker) and a size
(`max_reply_kb`), checked (synth/reply_cache.py `read_reply`), and only then cached, as it
arrives, so an error that stops the run loses nothing already paid for and nothing malformed is
kept. A reply that fails a check is counted as malformed, with its reason, never fatal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from loraqa.errors import LoraqaError, UsageError
from loraqa.optional import require
from loraqa.synth.candidates import answer_candidates
from loraqa.synth.generators import Draft, GeneratorStats
from loraqa.synth.replies import DEFAULT_PROMPT, read_pairs, render_prompt
from loraqa.synth.reply_cache import CachedReply, ReplyCache, read_reply, reply_key
from loraqa.synth.sampling import SourcePassage

PAIRS, QUESTIONS = "pairs", "questions"


@dataclass
class _Job:
    passage: int
    messages: list[dict]
    answer: str | None = None  # questions: the candidate the question is asked for
    hint: int | None = None


class EndpointError(LoraqaError):
    """The endpoint cannot be used at all (unreachable, the key refused, no such model, still
    rate limited after the retries): the run stops, the replies cached so far stay."""

    remedy = "Check --base-url, the key (OPENAI_API_KEY) and --model against what the endpoint serves; rerun: replies already cached are not asked again."


@dataclass
class Endpoint:
    """Where --generator openai asks, and how."""

    base_url: str | None = None
    ask: str = PAIRS  # pairs | questions (see above)
    concurrency: int = 4
    retries: int = 5
    timeout: float = 120.0
    prompt_file: str | None = None
    cache: str | None = None  # default: OUTPUT.cache.sqlite
    max_tokens: int | None = None
    max_reply_kb: float = 256  # a longer reply is malformed (and never cached)


class OpenAIGenerator:
    def __init__(
        self,
        endpoint: Endpoint,
        model: str,
        api_key: str,
        cache: ReplyCache,
        prompt: str = DEFAULT_PROMPT,
        per_passage: int = 3,
        seed: int = 42,
    ):
        ask, base_url, retries, timeout = endpoint.ask, endpoint.base_url, endpoint.retries, endpoint.timeout
        concurrency, max_tokens, max_reply_kb = endpoint.concurrency, endpoint.max_tokens, endpoint.max_reply_kb
        if ask not in (PAIRS, QUESTIONS):
            raise UsageError(f"unknown way to ask {ask!r}; use {PAIRS} or {QUESTIONS}")

        openai = require("openai", "--generator openai")
        import httpx

        self.base_url, self.model, self.ask = base_url, model, ask
        self.cache, self.per_passage, self.concurrency = cache, per_passage, concurrency
        self.retries, self.prompt, self.seed, self.max_tokens = retries, prompt, seed, max_tokens
        self.timeout, self.max_reply_bytes = timeout, int(max_reply_kb * 1024)
        self._sent = threading.local()  # when this thread's latest attempt was sent (retries included)
        http = httpx.Client(timeout=timeout, event_hooks={"request": [self._mark_sent]})
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, max_retries=retries, timeout=timeout, http_client=http
        )
        self.label = f"openai:{model}"
        self.stats = GeneratorStats(extra={"failed": 0, "cached_prompt_tokens": 0, "cached_completion_tokens": 0})
        self._stats_lock = threading.Lock()
        self._stop = threading.Event()
        self._first_failure: str | None = None

    def generate(
        self, passages: list[SourcePassage], progress: Callable[[int, int], None] | None = None
    ) -> list[Draft]:
        jobs = self._jobs(passages)
        replies: list[CachedReply | None] = [None] * len(jobs)
        todo = []
        for i, job in enumerate(jobs):
            replies[i] = self.cache.get(reply_key(self.model, job.messages))
            if replies[i] is None:
                todo.append(i)
        self.stats.cached = len(jobs) - len(todo)
        self.stats.extra["cached_prompt_tokens"] = sum(r.prompt_tokens for r in replies if r)
        self.stats.extra["cached_completion_tokens"] = sum(r.completion_tokens for r in replies if r)
        if todo:
            self._check_model()
        done = len(jobs) - len(todo)
        if progress:
            progress(done, len(jobs))
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._ask, jobs[i].messages): i for i in todo}
            try:
                for future in as_completed(futures):
                    replies[futures[future]] = future.result()
                    done += 1
                    if progress:
                        progress(done, len(jobs))
            except BaseException:
                self._stop.set()  # requests not yet sent are not sent; those in flight finish into the cache
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if todo and self.stats.extra["failed"] == len(todo) and not self.stats.cached:
            raise EndpointError(f"{self.base_url} refused every request: {self._first_failure}")
        return self._drafts(jobs, replies)

    def _jobs(self, passages: list[SourcePassage]) -> list[_Job]:
        jobs = []
        for i, p in enumerate(passages):
            if self.ask == PAIRS:
                jobs.append(
                    _Job(i, [{"role": "user", "content": render_prompt(self.prompt, p.text, self.per_passage)}])
                )
                continue
            for answer, start in answer_candidates(p.text, self.per_passage, f"{self.seed}:{p.document}:{p.start}"):
                jobs.append(
                    _Job(i, [{"role": "system", "content": p.text}, {"role": "user", "content": answer}], answer, start)
                )
        return jobs

    def _drafts(self, jobs: list[_Job], replies: list[CachedReply | None]) -> list[Draft]:
        drafts = []
        for job, reply in zip(jobs, replies):
            if reply is None:  # the request failed (counted)
                continue
            if self.ask == QUESTIONS:
                drafts.append(
                    Draft(
                        job.passage,
                        reply.content.strip(),
                        job.answer or "",  # asked with an answer: never None here
                        job.hint,
                        cut_off=reply.finish_reason == "length",
                    )
                )
                continue
            pairs = read_pairs(reply.content)
            if pairs is None:
                self.stats.malformed_reply("no question-answer pairs in it")
                continue
            drafts += [Draft(job.passage, q, a) for q, a in pairs[: self.per_passage]]
        return drafts

    def _mark_sent(self, request) -> None:
        self._sent.at = time.monotonic()

    def _ask(self, messages: list[dict]) -> CachedReply | None:
        import httpx
        import openai

        if self._stop.is_set():
            return None
        extra = {"max_tokens": self.max_tokens} if self.max_tokens else {}
        try:
            with self.client.chat.completions.with_streaming_response.create(
                model=self.model, messages=messages, **extra
            ) as raw:
                deadline = getattr(self._sent, "at", time.monotonic()) + self.timeout
                body, why = bytearray(), None
                for chunk in raw.iter_bytes():
                    body += chunk
                    if len(body) > self.max_reply_bytes:
                        why = f"over {self.max_reply_bytes // 1024} KB (--max-reply-kb)"
                    elif time.monotonic() > deadline:
                        why = f"not whole after {self.timeout:g} s (--timeout)"
                    if why:
                        break
        except (
            openai.APIConnectionError,
            openai.AuthenticationError,
            openai.PermissionDeniedError,
            openai.NotFoundError,
            openai.RateLimitError,
            openai.InternalServerError,
        ) as exc:
            raise self._fatal(exc) from None
        except openai.APIStatusError as exc:  # this request only (a passage too long, a bad parameter)
            self._failed(f"{exc.status_code}: {_message(exc)}")
            return None
        except httpx.HTTPError as exc:  # the reply broke off (or stalled) after it began
            self._failed(f"the reply broke off ({type(exc).__name__})")
            return None
        reply = read_reply(bytes(body)) if why is None else why
        with self._stats_lock:
            self.stats.requests += 1
            if isinstance(reply, str):
                self.stats.malformed_reply(reply)
                return None
            self.stats.prompt_tokens += reply.prompt_tokens
            self.stats.completion_tokens += reply.completion_tokens
        self.cache.put(reply_key(self.model, messages), reply)
        return reply

    def _failed(self, why: str) -> None:
        with self._stats_lock:
            self.stats.requests += 1
            self.stats.extra["failed"] += 1
            self._first_failure = self._first_failure or why
        return None

    def _check_model(self) -> None:
        """Ask the endpoint which models it serves before sending any passage: a wrong model name
        or key then costs one request and names the models there are."""
        import openai

        try:
            served = [m.id for m in self.client.models.list()]
        except openai.NotFoundError:
            return  # an endpoint without /models: the first request will say
        except openai.APIError as exc:
            raise self._fatal(exc) from None
        if served and self.model not in served:
            raise EndpointError(
                f"{self.base_url} does not serve the model '{self.model}'; it serves: {', '.join(served[:20])}"
            )

    def _fatal(self, exc) -> EndpointError:
        import openai

        kept = f"; the {len(self.cache)} replies received so far are kept in {self.cache.path} (a rerun asks only for the rest)"
        if isinstance(exc, openai.APITimeoutError):
            why = f"no reply from {self.base_url} in time after {self.retries} retries (raise --timeout?)"
        elif isinstance(exc, openai.APIConnectionError):
            why = f"cannot reach {self.base_url}: is the server running, and is the URL right (it usually ends in /v1)?"
        elif isinstance(exc, openai.AuthenticationError):
            why = f"{self.base_url} refused the API key (401): set OPENAI_API_KEY to a key it accepts"
        elif isinstance(exc, openai.PermissionDeniedError):
            why = f"{self.base_url} refused the request (403): {_message(exc)}"
        elif isinstance(exc, openai.NotFoundError):
            why = (
                f"{self.base_url} answered 404 for the model '{self.model}': it does not serve that model, or the "
                f"base URL is wrong (it usually ends in /v1)"
            )
        elif isinstance(exc, openai.RateLimitError):
            why = (
                f"{self.base_url} still answers 429 (rate limited) after {self.retries} retries: lower "
                f"--concurrency or try again later"
            )
        elif isinstance(exc, openai.APIStatusError):
            why = f"{self.base_url} answered {exc.status_code} after {self.retries} retries: {_message(exc)}"
        else:
            why = f"{self.base_url}: {exc}"
        return EndpointError(why + kept)


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:300]
    return str(getattr(exc, "message", exc))[:300]
