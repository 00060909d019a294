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


def reply_key(model: str, messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps([model, messages], ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class ReplyCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, content TEXT NOT NULL, "
                             "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, finish_reason TEXT)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(replies)")}
            if "finish_reason" not in columns:  # a cache written before finish reasons were kept
                self._db.execute("ALTER TABLE replies ADD COLUMN finish_reason TEXT")
            self._db.commit()
        except sqlite3.Error as exc:
            raise UsageError(f"cannot use {self.path} as the reply cache: {exc}") from None

    def get(self, key: str) -> CachedReply | None:
        with self._lock:
            row = self._db.execute("SELECT content, prompt_tokens, completion_tokens, finish_reason FROM replies "
                                   "WHERE key = ?", (key,)).fetchone()
        return CachedReply(*row) if row else None

    def put(self, key: str, reply: CachedReply) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO replies (key, content, prompt_tokens, completion_tokens, "
                             "finish_reason) VALUES (?, ?, ?, ?, ?)",
                             (key, reply.content, reply.prompt_tokens, reply.completion_tokens, reply.finish_reason))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
