"""The readers and their answers, in the study's ``answers.sqlite`` (survives reloads and restarts).

Each reader has a personal token (their link) and their own order of the study's images (drawn from
the operating system's randomness and kept here, so order effects average out over readers and no
reader can derive another's order or the key from the study's seed). An answer is final: a second
answer for the same image, or one for an image not in the reader's list, is refused. The time a
reader took is measured on the server, from when the image was first shown to the answer.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any

from synthgate.errors import DataError
from synthgate.evaluation.readers.study import Study
from synthgate.utils import utc_now

DB = "answers.sqlite"
ANSWERS = ("real", "synthetic")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readers (token TEXT PRIMARY KEY, name TEXT UNIQUE NOT NULL, number INTEGER UNIQUE NOT NULL,
                                    image_order TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shown (token TEXT NOT NULL, image_id TEXT NOT NULL, first_shown REAL NOT NULL,
                                  PRIMARY KEY (token, image_id));
CREATE TABLE IF NOT EXISTS answers (token TEXT NOT NULL REFERENCES readers(token), image_id TEXT NOT NULL,
                                    answer TEXT NOT NULL, confidence INTEGER, seconds REAL, created TEXT NOT NULL,
                                    PRIMARY KEY (token, image_id));
"""


class AnswerRefused(DataError):
    """An answer the study cannot take (unknown image, second answer, bad value)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Reader:
    token: str
    name: str
    order: list[str]
    answered: int

    @property
    def finished(self) -> bool:
        return self.answered >= len(self.order)


class Answers:
    def __init__(self, study: Study) -> None:
        self.study = study
        self._lock = threading.Lock()
        self._db = sqlite3.connect(study.root / DB, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def add_reader(self, name: str) -> Reader:
        name = name.strip()
        if not name:
            raise DataError("a reader needs a name (it is how the admin page and the analysis name them)")
        with self._lock:
            if self._db.execute("SELECT 1 FROM readers WHERE name = ?", (name,)).fetchone():
                raise DataError(f"a reader named {name!r} already exists in this study",
                                hint="`synthgate reader-study readers` lists them with their links")
            order = list(self.study.ids)
            secrets.SystemRandom().shuffle(order)
            token = secrets.token_urlsafe(18)
            try:  # BEGIN IMMEDIATE: two `add-reader` processes at once cannot take one number
                self._db.execute("BEGIN IMMEDIATE")
                number = self._db.execute("SELECT COALESCE(MAX(number), -1) + 1 FROM readers").fetchone()[0]
                self._db.execute("INSERT INTO readers VALUES (?, ?, ?, ?, ?)",
                                 (token, name, number, json.dumps(order), utc_now()))
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise DataError(f"a reader named {name!r} already exists in this study") from None
        return Reader(token, name, order, 0)

    def reader(self, token: str) -> Reader | None:
        row = self._db.execute("SELECT name, image_order FROM readers WHERE token = ?", (token,)).fetchone()
        if row is None:
            return None
        n = self._db.execute("SELECT COUNT(*) FROM answers WHERE token = ?", (token,)).fetchone()[0]
        return Reader(token, row[0], json.loads(row[1]), int(n))

    def readers(self) -> list[Reader]:
        tokens = [r[0] for r in self._db.execute("SELECT token FROM readers ORDER BY number")]
        return [r for t in tokens if (r := self.reader(t)) is not None]

    def next_image(self, reader: Reader) -> str | None:
        done = {r[0] for r in self._db.execute("SELECT image_id FROM answers WHERE token = ?", (reader.token,))}
        return next((i for i in reader.order if i not in done), None)

    def shown(self, token: str, image_id: str) -> None:
        """Remember when ``image_id`` was first shown to the reader (a reload keeps the first time)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO shown VALUES (?, ?, ?)", (token, image_id, time.time()))

    def answer(self, token: str, image_id: str, answer: str, confidence: int | None = None) -> None:
        reader = self.reader(token)
        if reader is None:
            raise AnswerRefused("unknown reader link", status=404)
        if image_id not in reader.order:
            raise AnswerRefused(f"image {image_id!r} is not in {reader.name}'s list", status=400)
        if answer not in ANSWERS:
            raise AnswerRefused(f"answer {answer!r}: expected 'real' or 'synthetic'", status=400)
        if confidence is not None and not 1 <= confidence <= 5:
            raise AnswerRefused(f"confidence {confidence}: expected 1 (a guess) to 5 (certain)", status=400)
        with self._lock:
            first = self._db.execute("SELECT first_shown FROM shown WHERE token = ? AND image_id = ?",
                                     (token, image_id)).fetchone()
            seconds = max(0.0, time.time() - first[0]) if first else None
            try:
                self._db.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                                 (token, image_id, answer, confidence, seconds, utc_now()))
            except sqlite3.IntegrityError:
                raise AnswerRefused(f"image {image_id!r} is already answered; answers are final", status=409) from None

    def all_answers(self) -> dict[str, dict[str, dict[str, Any]]]:
        """reader name -> image id -> answer, confidence."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, image_id, answer, conf in self._db.execute(
                "SELECT r.name, a.image_id, a.answer, a.confidence FROM answers a JOIN readers r USING (token)"):
            out.setdefault(name, {})[image_id] = {"answer": answer, "confidence": conf}
        return out
