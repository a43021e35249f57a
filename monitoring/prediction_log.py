"""Where the prediction log lives: a SQLite file (the default: nothing to run, one machine) or a
PostgreSQL database (several replicas share one, so a label posted to any of them finds the
prediction another logged). One schema and one set of statements serve both; only the driver,
its parameter style and how the schema version is kept differ.

A row is one transaction scored by one model, with the endpoint that decided it (the protocol's
name, as in the request metrics: `http` for /predict and /predict_columns, `oip`, `grpc`,
`kserve_v1`, `score` for the raw-payment endpoints): the request id, its position in the
request, the transaction id and the model tag make it unique, so a retried request (same
X-Request-ID or OIP id, same transactions) is logged once however many times it is scored, and a
challenger's score of the same transaction sits beside the champion's.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager, suppress
from pathlib import Path

# v1 had no uniqueness: a retried request was logged once per attempt. v2 did not record the
# endpoint (rows migrated from it have none). v3 kept a transaction index and a uniqueness index
# beside each other (two index entries a row where one serves both).
SCHEMA_VERSION = 4
COLUMNS = (
    "request_id, position, request_rows, transaction_id, model_tag, score, decision, scored_at,"
    " endpoint"
)
# Each index entry costs about as much as the row itself (ops/bench/prediction_log.py), so a
# logged row has one: the uniqueness of rows with a transaction id, transaction id first, which
# label lookups by transaction id use too. Rows without one are unique by request and position;
# a request's first row is indexed for labels by request id; labelled rows by time (no entry
# until labelled). Retried requests' rows conflict with the first attempt's and are skipped.
INDEXES = [
    "CREATE UNIQUE INDEX IF NOT EXISTS logged_once_by_transaction ON predictions"
    " (transaction_id, model_tag, request_id, position) WHERE transaction_id IS NOT NULL",
    "CREATE UNIQUE INDEX IF NOT EXISTS logged_once_without_transaction ON predictions"
    " (request_id, position, model_tag) WHERE transaction_id IS NULL",
    "CREATE INDEX IF NOT EXISTS requests_by_id ON predictions (request_id) WHERE position = 0",
    "CREATE INDEX IF NOT EXISTS labelled_by_time ON predictions (model_tag, scored_at)"
    " WHERE label IS NOT NULL",
]
SCHEMA = [
    """CREATE TABLE IF NOT EXISTS predictions (
        request_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        request_rows INTEGER NOT NULL,
        transaction_id TEXT,
        model_tag TEXT NOT NULL,
        score DOUBLE PRECISION NOT NULL,
        decision SMALLINT NOT NULL,
        scored_at DOUBLE PRECISION NOT NULL,
        label SMALLINT,
        label_time DOUBLE PRECISION,
        labelled_at DOUBLE PRECISION,
        endpoint TEXT
    )""",
    *INDEXES,
]
ROW_VALUES = 9
INSERT_CHUNK_ROWS = 3600  # 9 values a row: within SQLite's 32,766 and PostgreSQL's 65,535
ADD_ENDPOINT = "ALTER TABLE predictions ADD COLUMN endpoint TEXT"  # v2 -> v3
V3_INDEXES = ("scored_once", "predictions_by_transaction")  # v3 -> v4: replaced by INDEXES


LABEL_BY_TRANSACTION = (
    "UPDATE predictions SET label = ?, label_time = ?, labelled_at = ? WHERE transaction_id = ?"
)
LABEL_BY_REQUEST = (
    "UPDATE predictions SET label = ?, label_time = ?, labelled_at = ?"
    " WHERE request_id = ? AND position = 0"
)


class IncompatibleLog(RuntimeError):
    """The prediction log was written by another schema version."""


class LogUnavailable(RuntimeError):
    """The prediction log cannot be reached or written now (the database is down or slow)."""


class PredictionLog:
    """The statements, for a DB-API connection with `?` placeholders (translated by subclasses).
    One thread uses a log at a time (the feedback store's writer thread)."""

    placeholder = "?"
    driver_errors: tuple[type[Exception], ...] = ()
    description = ""

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.placeholder)

    @contextmanager
    def _transaction(self):
        raise NotImplementedError
        yield

    def insert(self, rows: list[tuple]) -> int:
        """Append scored rows (`COLUMNS` order); rows already logged are skipped. New rows."""
        written = 0
        with self._transaction() as cursor:
            for start in range(0, len(rows), INSERT_CHUNK_ROWS):
                chunk = rows[start : start + INSERT_CHUNK_ROWS]
                values = ", ".join(["(" + ", ".join("?" * ROW_VALUES) + ")"] * len(chunk))
                # One multi-row statement per chunk: per-row statements cost a driver round
                # trip (and, in sqlite3, a GIL hand-over) each.
                statement = f"INSERT INTO predictions ({COLUMNS}) VALUES {values}"  # noqa: S608
                cursor.execute(  # only placeholders and constant names are formatted in
                    self._sql(statement + " ON CONFLICT DO NOTHING"),
                    [value for row in chunk for value in row],
                )
                written += max(cursor.rowcount, 0)
        return written

    def label_transactions(self, labels: list[tuple[str, int, float, float]]) -> list[int]:
        """Set (transaction_id, label, label_time, labelled_at): rows matched, per label."""
        matched = []
        with self._transaction() as cursor:
            for transaction_id, *label in labels:
                matched.append(self._label(cursor, LABEL_BY_TRANSACTION, transaction_id, label))
        return matched

    def label_requests(self, labels: list[tuple[str, int, float, float]]) -> list[int | None]:
        """Set (request_id, ...) on one-transaction requests: rows matched per label, None for a
        request that scored several transactions (a label names one)."""
        matched: list[int | None] = []
        with self._transaction() as cursor:
            for request_id, label, label_time, now in labels:
                cursor.execute(
                    self._sql(
                        "SELECT request_rows FROM predictions WHERE request_id = ? AND position = 0"
                    ),
                    (request_id,),
                )
                if any(rows > 1 for (rows,) in cursor.fetchall()):
                    matched.append(None)
                    continue
                matched.append(
                    self._label(
                        cursor,
                        LABEL_BY_REQUEST,
                        request_id,
                        (label, label_time, now),
                    )
                )
        return matched

    def _label(self, cursor, statement: str, key: str, label) -> int:
        """Set (label, label_time, labelled_at) on the rows `statement` names by `key`: how
        many matched."""
        cursor.execute(self._sql(statement), (*label, key))
        return cursor.rowcount

    def labelled(self, model_tag: str, since: float) -> list[tuple[int, float, int]]:
        """(label, score, decision) of the model's labelled predictions scored since then."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT label, score, decision FROM predictions"
                    " WHERE label IS NOT NULL AND model_tag = ? AND scored_at >= ?"
                ),
                (model_tag, since),
            )
            return cursor.fetchall()

    def paired_labels(
        self, champion_tag: str, challenger_tag: str, since: float
    ) -> list[tuple[int, float, float]]:
        """(label, champion's score, challenger's score) of the labelled transactions both
        models scored (shadow or canary): the live comparison on the same rows."""
        with self._transaction() as cursor:
            cursor.execute(
                self._sql(
                    "SELECT a.label, a.score, b.score FROM predictions a JOIN predictions b"
                    " ON b.transaction_id = a.transaction_id AND b.model_tag = ?"
                    " AND b.request_id = a.request_id AND b.position = a.position"
                    " WHERE a.model_tag = ? AND a.label IS NOT NULL AND a.scored_at >= ?"
                    " UNION ALL"
                    " SELECT a.label, a.score, b.score FROM predictions a JOIN predictions b"
                    " ON b.request_id = a.request_id AND b.position = a.position"
                    " AND b.model_tag = ? AND b.transaction_id IS NULL"
                    " WHERE a.transaction_id IS NULL AND a.model_tag = ? AND a.label IS NOT NULL"
                    " AND a.scored_at >= ?"
                ),
                (challenger_tag, champion_tag, since) * 2,
            )
            return cursor.fetchall()

    def count(self) -> int:
        with self._transaction() as cursor:
            cursor.execute("SELECT count(*) FROM predictions")
            return cursor.fetchone()[0]

    def purge(self, before: float) -> None:
        with self._transaction() as cursor:
            cursor.execute(self._sql("DELETE FROM predictions WHERE scored_at < ?"), (before,))

    def close(self) -> None:
        raise NotImplementedError


class SqliteLog(PredictionLog):
    """A SQLite file in WAL mode: readers never block the writer, other worker processes of the
    machine share the file, and it survives restarts."""

    driver_errors = (sqlite3.Error,)

    def __init__(self, path: Path):
        self.description = str(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._transaction() as cursor:
            (version,) = cursor.execute("PRAGMA user_version").fetchone()
            exists = cursor.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'predictions'"
            ).fetchone()
            if exists and version == 1:
                # v1 -> v2: keep the first of each retried request's rows, then make them unique.
                cursor.execute(
                    "DELETE FROM predictions WHERE rowid NOT IN (SELECT min(rowid) FROM"
                    " predictions GROUP BY request_id, position, COALESCE(transaction_id, ''),"
                    " model_tag)"
                )
            if exists and version in (1, 2):
                cursor.execute(ADD_ENDPOINT)
            if exists and version in (1, 2, 3):
                for index in V3_INDEXES:
                    cursor.execute(f"DROP INDEX IF EXISTS {index}")
            elif exists and version != SCHEMA_VERSION:
                raise IncompatibleLog(
                    f"{path}: prediction log schema {version}, this service writes"
                    f" {SCHEMA_VERSION}; move the file aside or set FRAUD_MONITORING__FEEDBACK_DB"
                )
            for statement in SCHEMA:
                cursor.execute(statement)
            cursor.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self):
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN")
            try:
                yield cursor
            except BaseException:
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")

    def close(self) -> None:
        self._db.close()


class PostgresLog(PredictionLog):
    """A PostgreSQL database shared by every replica (psycopg 3). The schema is created or
    migrated under an advisory lock, so replicas starting together do not race."""

    placeholder = "%s"
    SCHEMA_LOCK = 7_301_019  # an arbitrary application-wide advisory lock id

    def __init__(self, url: str, connect_timeout_s: float = 5.0):
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        self._psycopg = psycopg
        self.driver_errors = (psycopg.Error,)
        self._url = url
        self._timeout = connect_timeout_s
        parts = conninfo_to_dict(url)  # for messages: never the password
        self.description = (
            f"postgresql://{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
            f"/{parts.get('dbname', '')}"
        )
        self._db = None
        with suppress(psycopg.OperationalError):  # down now: the writer retries, degraded
            self._connect()

    def _connect(self) -> None:
        if self._db is not None and not self._db.closed:
            return
        self._db = self._psycopg.connect(
            self._url, autocommit=True, connect_timeout=max(1, int(self._timeout))
        )
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (self.SCHEMA_LOCK,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS prediction_log_schema (version INTEGER NOT NULL)"
            )
            cursor.execute("SELECT version FROM prediction_log_schema")
            found = cursor.fetchone()
            if found is not None and found[0] == 2:
                cursor.execute(ADD_ENDPOINT)
            if found is not None and found[0] in (2, 3):
                for index in V3_INDEXES:
                    cursor.execute(f"DROP INDEX IF EXISTS {index}")
                cursor.execute("UPDATE prediction_log_schema SET version = %s", (SCHEMA_VERSION,))
            elif found is not None and found[0] != SCHEMA_VERSION:
                raise IncompatibleLog(
                    f"{self.description}: prediction log schema {found[0]}, this service writes"
                    f" {SCHEMA_VERSION}; migrate the database or point"
                    " FRAUD_MONITORING__DATABASE_URL at another one"
                )
            for statement in SCHEMA:
                cursor.execute(statement)
            if found is None:
                cursor.execute(
                    "INSERT INTO prediction_log_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                )

    def insert(self, rows: list[tuple]) -> int:
        """COPY into a session table, then one INSERT .. ON CONFLICT: a multi-row VALUES insert
        cost ~39 us a row here, parsing and binding 8 parameters a row."""
        with self._transaction() as cursor:
            cursor.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming"
                " (LIKE predictions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
            with cursor.copy(f"COPY incoming ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO predictions ({COLUMNS}) SELECT {COLUMNS} FROM incoming"  # noqa: S608
                " ON CONFLICT DO NOTHING"
            )
            return max(cursor.rowcount, 0)

    @contextmanager
    def _transaction(self):
        try:
            self._connect()
            with self._db.transaction(), self._db.cursor() as cursor:
                yield cursor
        except self._psycopg.OperationalError as error:
            # The connection is gone or the server refused: reconnect on the next call.
            if self._db is not None:
                self._db.close()
            raise LogUnavailable(f"{self.description}: {error}".strip()) from error

    def close(self) -> None:
        if self._db is not None:
            self._db.close()


def open_log(database_url: str | None, sqlite_path: Path) -> PredictionLog:
    """PostgreSQL when a database URL is set, else the SQLite file."""
    if database_url:
        return PostgresLog(database_url)
    return SqliteLog(sqlite_path)
