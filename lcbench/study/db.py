"""The study's SQLite store: questions, participants, their question orders and their answers.

One file ``study.sqlite`` in WAL mode. Every answer is one row, unique per (participant, question),
and must match one of that participant's assigned questions (a foreign key). Answers are written in
an ``IMMEDIATE`` transaction, so many participants submitting at once neither lose nor double rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

DB_NAME = "study.sqlite"
RATING_RANGE = (1, 5)
# How long a writer waits for another's transaction: generous, as a busy machine may not schedule the
# lock holder for a while (a participant's answer must wait, never fail).
BUSY_TIMEOUT_S = 120.0

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE questions (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL, run_path TEXT NOT NULL, method TEXT NOT NULL, label TEXT NOT NULL,
    scene TEXT NOT NULL, idx INTEGER NOT NULL, seed INTEGER NOT NULL,
    n_concepts INTEGER NOT NULL, style TEXT, image TEXT NOT NULL, prompt TEXT NOT NULL,
    concepts TEXT NOT NULL
);
CREATE TABLE participants (code TEXT PRIMARY KEY);
CREATE TABLE assignments (
    participant TEXT NOT NULL REFERENCES participants(code),
    position INTEGER NOT NULL,
    question INTEGER NOT NULL REFERENCES questions(id),
    PRIMARY KEY (participant, position),
    UNIQUE (participant, question)
);
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    participant TEXT NOT NULL,
    question INTEGER NOT NULL,
    text_alignment INTEGER NOT NULL CHECK (text_alignment BETWEEN 1 AND 5),
    image_alignment INTEGER NOT NULL CHECK (image_alignment BETWEEN 1 AND 5),
    answered_at TEXT NOT NULL,
    UNIQUE (participant, question),
    FOREIGN KEY (participant, question) REFERENCES assignments(participant, question)
);
"""


class StudyError(RuntimeError):
    """The study folder is missing or unusable."""


class AccessDenied(PermissionError):
    """A participant code or admin token was refused."""


@dataclass(frozen=True)
class Question:
    """One image-question pair as a participant sees it (method kept for the admin side only)."""

    id: int
    position: int
    run: str
    method: str
    label: str
    scene: str
    index: int
    seed: int
    n_concepts: int
    style: str | None
    image: str
    prompt: str
    concepts: list[dict[str, Any]]
    answered: bool


@dataclass(frozen=True)
class Progress:
    """How far one participant got."""

    participant: str
    answered: int
    total: int
    last_answer_at: str | None

    @property
    def done(self) -> bool:
        """True when every question is answered."""
        return self.answered >= self.total


def hash_token(token: str) -> str:
    """The stored form of the admin token (SHA-256 hex)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StudyDB:
    """Access to one study's SQLite file."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).resolve()
        self.path = self.folder / DB_NAME
        if not self.path.is_file():
            raise StudyError(
                f"{self.folder}: not a study folder (no {DB_NAME}); create one with `bench study create`"
            )

    @staticmethod
    def initialise(folder: Path, meta: dict[str, str]) -> StudyDB:
        """Create the database file with its schema and meta values; refuses an existing one."""
        path = folder / DB_NAME
        if path.exists():
            raise StudyError(
                f"{path}: a study already exists here; choose another --out (answers are never overwritten)"
            )
        folder.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript("BEGIN;" + SCHEMA + "COMMIT;")
            with _transaction(con):
                con.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        finally:
            con.close()
        return StudyDB(folder)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived connection (WAL, foreign keys on, a busy timeout of BUSY_TIMEOUT_S), closed afterwards."""
        con = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA foreign_keys=ON")
            con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            yield con
        finally:
            con.close()

    # -- writing at creation --------------------------------------------------------------------
    def add_questions(self, rows: list[dict[str, Any]]) -> None:
        """Insert the question set (ids given by the caller)."""
        with self.connect() as con, _transaction(con):
            con.executemany(
                "INSERT INTO questions (id, run, run_path, method, label, scene, idx, seed, n_concepts,"
                " style, image, prompt, concepts) VALUES (:id, :run, :run_path, :method, :label, :scene,"
                " :index, :seed, :n_concepts, :style, :image, :prompt, :concepts)",
                [dict(r, concepts=json.dumps(r["concepts"])) for r in rows],
            )

    def add_participant(self, code: str, order: list[int]) -> None:
        """Register a participant with the question ids in the order they will see them."""
        with self.connect() as con, _transaction(con):
            con.execute("INSERT INTO participants VALUES (?)", (code,))
            con.executemany(
                "INSERT INTO assignments VALUES (?, ?, ?)",
                [(code, pos, qid) for pos, qid in enumerate(order)],
            )

    # -- access control -----------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The study's meta values (seed, runs, creation time, the admin token's hash)."""
        with self.connect() as con:
            return {row["key"]: row["value"] for row in con.execute("SELECT key, value FROM meta")}

    def check_participant(self, code: str) -> str:
        """Return the normalised code of a registered participant; raise AccessDenied otherwise."""
        code = (code or "").strip()
        with self.connect() as con:
            found = con.execute("SELECT 1 FROM participants WHERE code = ?", (code,)).fetchone()
        if not code or found is None:
            raise AccessDenied(
                "unknown participant code: check the code you were given (letters, digits, '-', '_')"
            )
        return code

    def check_admin(self, token: str) -> None:
        """Raise AccessDenied unless ``token`` is the admin token given at `bench study create`."""
        expected = self.meta().get("admin_token_sha256", "")
        if not token or not hmac.compare_digest(hash_token(token.strip()), expected):
            raise AccessDenied("wrong admin token: use the token printed by `bench study create`")

    # -- participant side ---------------------------------------------------------------------
    def questions(self, code: str) -> list[Question]:
        """The participant's questions in their order, each marked answered or not."""
        code = self.check_participant(code)
        with self.connect() as con:
            rows = con.execute(
                "SELECT q.*, a.position, (ans.id IS NOT NULL) AS answered FROM assignments a"
                " JOIN questions q ON q.id = a.question"
                " LEFT JOIN answers ans ON ans.participant = a.participant AND ans.question = a.question"
                " WHERE a.participant = ? ORDER BY a.position",
                (code,),
            ).fetchall()
        return [_question(r) for r in rows]

    def next_question(self, code: str) -> Question | None:
        """The first unanswered question in the participant's order (None when finished)."""
        return next((q for q in self.questions(code) if not q.answered), None)

    def progress(self, code: str) -> Progress:
        """One participant's progress."""
        return next(p for p in self.all_progress() if p.participant == self.check_participant(code))

    def submit(self, code: str, question: int, text_alignment: int, image_alignment: int) -> bool:
        """Store one answer; True when stored, False when already answered (the first answer wins)."""
        code = self.check_participant(code)
        for name, value in (("text_alignment", text_alignment), ("image_alignment", image_alignment)):
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
                raise ValueError(f"answer field '{name}': expected an integer rating 1-5 (got {value!r})")
        with self.connect() as con, _transaction(con, immediate=True):
            assigned = con.execute(
                "SELECT 1 FROM assignments WHERE participant = ? AND question = ?", (code, question)
            ).fetchone()
            if assigned is None:
                raise AccessDenied(f"question {question} is not one of participant {code!r}'s questions")
            cursor = con.execute(
                "INSERT INTO answers (participant, question, text_alignment, image_alignment, answered_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (participant, question) DO NOTHING",
                (code, question, text_alignment, image_alignment, _now()),
            )
            return cursor.rowcount == 1

    # -- admin side ---------------------------------------------------------------------------
    def all_progress(self) -> list[Progress]:
        """Every participant's progress, by code."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT p.code, (SELECT COUNT(*) FROM assignments a WHERE a.participant = p.code) AS total,"
                " COUNT(ans.id) AS answered, MAX(ans.answered_at) AS last FROM participants p"
                " LEFT JOIN answers ans ON ans.participant = p.code GROUP BY p.code ORDER BY p.code"
            ).fetchall()
        return [Progress(r["code"], r["answered"], r["total"], r["last"]) for r in rows]

    def answers(self) -> list[dict[str, Any]]:
        """Every answer joined with its question, in answer order (for aggregation and export)."""
        with self.connect() as con:
            rows = con.execute(
                "SELECT ans.id AS answer_id, ans.participant, a.position, q.id AS question, q.run, q.method,"
                ' q.label, q.scene, q.idx AS "index", q.seed, q.n_concepts, q.style, q.image,'
                " ans.text_alignment, ans.image_alignment, ans.answered_at FROM answers ans"
                " JOIN questions q ON q.id = ans.question"
                " JOIN assignments a ON a.participant = ans.participant AND a.question = ans.question"
                " ORDER BY ans.id"
            ).fetchall()
        return [dict(r) for r in rows]


@contextmanager
def _transaction(con: sqlite3.Connection, immediate: bool = False) -> Iterator[None]:
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _question(row: sqlite3.Row) -> Question:
    return Question(
        id=row["id"],
        position=row["position"],
        run=row["run"],
        method=row["method"],
        label=row["label"],
        scene=row["scene"],
        index=row["idx"],
        seed=row["seed"],
        n_concepts=row["n_concepts"],
        style=row["style"],
        image=row["image"],
        prompt=row["prompt"],
        concepts=json.loads(row["concepts"]),
        answered=bool(row["answered"]),
    )
