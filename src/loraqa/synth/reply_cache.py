"""Replies already paid for, so that a rerun (after a crash, a rate limit, a changed filter or
more passages) asks the endpoint only for what it has not answered yet.

A reply is keyed by the model and the exact messages sent: change the prompt, the passage or
the model and it is asked again. SQLite because each reply must be on disk the moment it
arrives (a run stopped by an error keeps everything paid for so far) and writes come from
several threads; one file beside the output, readable with any SQLite tool.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from loraqa.errors import UsageError


@dataclass
class CachedReply:
    content: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None  # "length": the reply reached the token limit


MAX_TOKENS = 10**9  # a token count beyond this is no count an endpoint gives


def _count(value) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS else None


def read_reply(body: bytes) -> CachedReply | str:
    """A chat completion's body as a reply, or why it is not one. Nothing of it is trusted: an
    endpoint (or whatever answers at its URL) may send HTML, an array, a number where a count
    belongs or a JSON bomb, and a reply must be checked before it is cached, or every rerun
    would read the same poison back."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8"
    except RecursionError:
        return "JSON nested too deeply"
    except ValueError:
        return "not JSON"
    if not isinstance(data, dict):
        return "not a chat completion (a JSON object)"
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "no choices"
    message = choices[0].get("message")
    if not isinstance(message, dict):
        return "no message"
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        return "content that is not text"
    finish = choices[0].get("finish_reason")
    if finish is not None and not isinstance(finish, str):
        return "a finish reason that is not text"
    usage = data.get("usage")
    if usage is None:
        usage = {}
    if not isinstance(usage, dict):
        return "usage that is not token counts"
    prompt, completion = (_count(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens"))
    if prompt is None or completion is None:
        return "usage that is not token counts"
    return CachedReply(content or "", prompt, completion, finish[:32] if finish else None)


def reply_key(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps([model, messages], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


def _readable(content: str) -> bool:
    try:
        content.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class ReplyCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, content TEXT NOT NULL, "
                "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
            if "finish_reason" not in columns:  # a cache written before finish reasons were kept
                self._db.execute("ALTER TABLE replies ADD COLUMN finish_reason TEXT")
            self._db.commit()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot use {self.path} as the reply cache: {exc}") from None

    def get(self, key: str) -> CachedReply | None:
        """The cached reply; None also for a row that is not a reply (a cache written by a
        version that cached unchecked replies): that request is asked again."""
        with self._lock:
            row = self._db.execute(
                "SELECT content, prompt_tokens, completion_tokens, finish_reason FROM replies WHERE key = ?", (key,)
            ).fetchone()
        if row is None:
            return None
        content, prompt, completion, finish = row
        if (
            not isinstance(content, str)
            or _count(prompt) is None
            or _count(completion) is None
            or not (finish is None or isinstance(finish, str))
            or not _readable(content)
        ):
            return None
        return CachedReply(content, prompt, completion, finish)

    def put(self, key: str, reply: CachedReply) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, content, prompt_tokens, completion_tokens, "
                "finish_reason) VALUES (?, ?, ?, ?, ?)",
                (key, reply.content, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
