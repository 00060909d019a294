"""Every limit the servers enforce, with its default, in one place (docs/how-to/security.md
lists the same table). `loraqa serve` and `loraqa mcp` set them from their flags.

Each bounds what one client can make the server hold or do: bytes read, characters planned,
windows queued, time spent, adapters loaded. Over a limit a request is refused before the work
starts (413, 429/503 with Retry-After, 504 when its time ran out), and never takes another
client's request down with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraqa.errors import UsageError
from loraqa.retrieval.store import QueryLimits

MAX_CONTEXT_CHARS = 1_000_000  # a long document is read in windows


@dataclass(frozen=True)
class ServerLimits:
    max_context_chars: int = MAX_CONTEXT_CHARS  # longest document one question may send
    max_question_chars: int = 1_000
    max_batch_items: int = 64  # questions in one /v1/answer/batch, prompts in one /v1/completions
    max_request_windows: int = 4_096  # windows one request may need (a 1 MB document needs ~1,000)
    max_queued_windows: int = 16_384  # windows waiting for the model, all requests together
    request_timeout_s: float = 300.0  # from arrival to answer; then 504 and its windows are dropped
    max_adapters: int = 32  # adapters loaded at once (loaded at start or later)
    max_adapter_mb: int = 2_048  # files of one hot-loaded adapter folder
    max_query_chars: int = QueryLimits.max_chars  # a search query (and a question used as one)
    max_query_words: int = QueryLimits.max_words

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise UsageError(f"server limit {name} must be > 0, got {value}")

    @property
    def query_limits(self) -> QueryLimits:
        return QueryLimits(self.max_query_chars, self.max_query_words)

    @property
    def max_body_bytes(self) -> int:
        """Bytes a request body may have: one full-size document as UTF-8 (up to 4 bytes a
        character, JSON escapes included at 2x), plus room for the rest of the request."""
        return 2 * self.max_context_chars + 256 * 1024
