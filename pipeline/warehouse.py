"""The DuckDB warehouse: schema DDL, short-lived connections, idempotent writes.

DuckDB allows one writing process per file. Connections here are opened for
one short read or write and closed; opening retries with backoff while another
process holds the lock. Every write replaces exactly the rows it owns (a
partition, a run) inside one transaction, so a rerun gives the same rows and a
crash leaves the old rows, never half of the new.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import duckdb
import polars as pl

SCHEMAS = (
    "raw",
    "staging",
    "features",
    "encodings",
    "models",
    "predictions",
    "backtest",
    "monitoring",
    "signals",
)

# table -> DDL. Keys mirror DESIGN.md "The warehouse". Timestamps are UTC.
TABLES: dict[str, str] = {
    "raw.candles": """
        create table if not exists raw.candles (
            symbol varchar not null,
            interval varchar not null,
            ts timestamp not null,              -- candle open time, UTC
            open double not null,
            high double not null,
            low double not null,
            close double not null,
            volume double not null,
            turnover double,                    -- quote value; null where the source lacks it
            source varchar not null,
            ingested_at timestamp not null default current_timestamp,
            primary key (symbol, interval, ts)
        )""",
    "raw.funding": """
        create table if not exists raw.funding (
            symbol varchar not null,
            ts timestamp not null,              -- settlement time, UTC
            funding_rate double not null,       -- per settlement, fraction
            source varchar not null,
            ingested_at timestamp not null default current_timestamp,
            primary key (symbol, ts)
        )""",
    "raw.open_interest": """
        create table if not exists raw.open_interest (
            symbol varchar not null,
            interval varchar not null,
            ts timestamp not null,
            open_interest double not null,
            source varchar not null,
            ingested_at timestamp not null default current_timestamp,
            primary key (symbol, interval, ts)
        )""",
    "raw.orderbook": """
        create table if not exists raw.orderbook (
            symbol varchar not null,
            ts timestamp not null,              -- exchange snapshot time, UTC
            bid_px double[] not null,           -- best first
            bid_sz double[] not null,
            ask_px double[] not null,           -- best first
            ask_sz double[] not null,
            source varchar not null,
            ingested_at timestamp not null default current_timestamp,
            primary key (symbol, ts)
        )""",
    "models.registry": """
        create table if not exists models.registry (
            model_id varchar primary key,
            architecture varchar not null,
            variant varchar,
            symbol varchar,
            interval varchar,
            fold integer,
            train_start timestamp, train_end timestamp,
            test_start timestamp, test_end timestamp,
            data_fingerprint varchar,
            metrics json,
            artifact_path varchar,
            trigger varchar,                    -- schedule / drift / manual
            created_at timestamp not null default current_timestamp,
            version varchar,                    -- the model version (models.versions) this row belongs to
            role varchar,                       -- 'fold' (walk-forward, has a test block) / 'live' (the live refit)
            artifact_sha256 json,               -- {file name: SHA-256} of every file under artifact_path
            purged boolean default false        -- its artifacts were deleted by retention (CONVTRADE_KEEP_VERSIONS)
        )""",
    "models.versions": """
        create table if not exists models.versions (
            architecture varchar not null,
            interval varchar not null,
            version varchar not null,           -- hash of code version, data fingerprint and settings
            code_version varchar,
            data_fingerprint varchar,
            settings json,                      -- the training recipe (TrainingConfig)
            trigger varchar,                    -- schedule / drift / manual
            folds integer,
            live_train_start timestamp, live_train_end timestamp,   -- the live refit's training range
            oos_log_loss double, oos_accuracy double,               -- walk-forward, over every fold's test bars
            purged boolean default false,
            created_at timestamp not null default current_timestamp,
            primary key (architecture, interval, version)
        )""",
    "models.champions": """
        create table if not exists models.champions (
            architecture varchar not null,
            interval varchar not null,
            version varchar not null,           -- the version whose live refit trades (signals.latest)
            previous_version varchar,           -- the champion before it (what rollback restores)
            reason varchar,
            since timestamp not null default current_timestamp,
            primary key (architecture, interval)
        )""",
    "models.promotions": """
        create table if not exists models.promotions (
            architecture varchar not null,
            interval varchar not null,
            "at" timestamp not null default current_timestamp,
            version varchar not null,           -- the version judged (the one promoted, or the challenger kept)
            from_version varchar,               -- the champion before
            to_version varchar,                 -- the champion after (= from_version when not promoted)
            promoted boolean not null,
            action varchar not null,            -- gate / first / force / promote (command) / rollback (command)
            reason varchar,
            metrics json                        -- the gate's comparison on the shared test bars
        )""",
    "predictions.oos": """
        create table if not exists predictions.oos (
            model_id varchar not null,
            symbol varchar not null,
            interval varchar not null,
            ts timestamp not null,
            p_down double, p_flat double, p_up double,
            expected_return double,
            expected_volatility double,
            confidence double,
            primary key (model_id, symbol, interval, ts)
        )""",
    "backtest.runs": """
        create table if not exists backtest.runs (
            run_id varchar primary key,
            strategy varchar not null,          -- architecture or baseline name
            family varchar,                     -- strategy family whose trials deflate its Sharpe ("benchmark")
            symbol varchar not null,
            interval varchar not null,
            config json,
            model_ids varchar[],
            data_fingerprint varchar,
            start_ts timestamp, end_ts timestamp,
            report_path varchar,
            created_at timestamp not null default current_timestamp
        )""",
    "backtest.trades": """
        create table if not exists backtest.trades (
            run_id varchar not null,
            trade_no integer not null,
            side integer not null,              -- +1 long, -1 short
            entry_ts timestamp not null, exit_ts timestamp,
            entry_price double not null, exit_price double,
            size double not null,               -- fraction of equity at entry
            pnl double, fees double, funding double,
            exit_reason varchar,
            primary key (run_id, trade_no)
        )""",
    "backtest.equity": """
        create table if not exists backtest.equity (
            run_id varchar not null,
            ts timestamp not null,
            equity double not null,
            position double not null,
            drawdown double not null,
            primary key (run_id, ts)
        )""",
    "backtest.metrics": """
        create table if not exists backtest.metrics (
            run_id varchar not null,
            metric varchar not null,
            value double,
            primary key (run_id, metric)
        )""",
    "monitoring.drift": """
        create table if not exists monitoring.drift (
            symbol varchar not null,
            feature varchar not null,
            "at" timestamp not null,
            psi double, ks double,
            reference_start timestamp, reference_end timestamp,
            current_start timestamp, current_end timestamp,
            ks_pvalue double,                   -- two-sample KS p-value
            ks_pvalue_adjusted double,          -- Bonferroni over the symbol's features
            n_reference bigint, n_current bigint,
            drifted boolean,                    -- against the thresholds when computed
            model_id varchar,                   -- the live model whose training range is the reference
            primary key (symbol, feature, "at")
        )""",
    "monitoring.accuracy": """
        create table if not exists monitoring.accuracy (
            symbol varchar not null,
            architecture varchar not null,
            "at" timestamp not null,            -- the drift report it belongs to (newest bar compared)
            recent_accuracy double,             -- newest predicted bars with a known label
            n_recent bigint,
            recent_start timestamp, recent_end timestamp,
            walk_forward_accuracy double,       -- every fold's oos_accuracy, weighted by n_test
            decayed boolean,
            primary key (symbol, architecture, "at")
        )""",
    "signals.latest": """
        create table if not exists signals.latest (
            symbol varchar not null,
            architecture varchar not null,
            ts timestamp not null,
            signal integer not null,            -- -1 short, 0 flat, +1 long
            confidence double,
            size double,
            model_id varchar,
            interval varchar,
            p_down double, p_flat double, p_up double,
            expected_move double,               -- sum_k p_k * r_k of the edge rule
            price double,                       -- close of the candle at ts
            created_at timestamp default current_timestamp,
            version varchar,                    -- the champion version whose model gave the signal
            train_start timestamp,              -- that model's training range (the live refit: up to the
            train_end timestamp,                -- newest labelled bar)
            primary key (symbol, architecture)
        )""",
    "signals.paper_ledger": """
        create table if not exists signals.paper_ledger (
            architecture varchar not null,
            symbol varchar not null,
            interval varchar not null,
            ts timestamp not null,              -- candle open time; marked at its close
            price double not null,              -- the candle's close
            signal integer,                     -- the signal booked at this bar (null: none, position held)
            target double,                      -- position after this bar's booking, fraction of equity
            position double not null,           -- units held after this bar
            traded double not null,             -- units traded at this bar (signed)
            fees double not null,               -- fees + slippage paid at this bar
            pnl double not null,                -- mark-to-market P&L of this bar, net of fees
            equity double not null,
            model_id varchar,
            primary key (architecture, symbol, interval, ts)
        )""",
}


# Image encodings (pipeline.encodings.build.ENCODINGS, the one list of them): one index table per encoding,
# ``encodings.<name>_index``, mapping each image's row in its month's array file
# ($DATA_DIR/artifacts/encodings/<name>/<symbol>_<interval>/<YYYY-MM>.npy) to its series and ts. Created on
# the encoding's first write (table_ddl), so a new encoding needs no line here.
ENCODING_INDEX = re.compile(r"encodings\.([a-z][a-z0-9_]*)_index")
ENCODING_INDEX_DDL = """
        create table if not exists encodings.{name}_index (
            symbol varchar not null,
            interval varchar not null,
            ts timestamp not null,              -- the image's bar (candle open time) or snapshot time, UTC
            "row" bigint not null,              -- row of the image in its array file
            primary key (symbol, interval, ts)
        )"""


def table_ddl(table: str) -> str:
    """The DDL of a warehouse table: one of TABLES, or the index table of an image encoding."""
    if table in TABLES:
        return TABLES[table]
    if match := ENCODING_INDEX.fullmatch(table):
        return ENCODING_INDEX_DDL.format(name=match.group(1))
    raise KeyError(f"unknown warehouse table {table!r}; known: {', '.join(TABLES)} and encodings.<name>_index")


def table_schema(table: str) -> dict[str, pl.DataType]:
    """The polars schema of a table's columns that have no default (what a writer supplies), from its DDL."""
    with duckdb.connect(":memory:") as con:
        con.execute(f"create schema {table.split('.')[0]}")
        con.execute(table_ddl(table))
        defaults = {name for name, has_default in con.execute(
            "select column_name, column_default is not null from information_schema.columns "
            "where table_schema || '.' || table_name = ?", [table]).fetchall() if has_default}
        frame = con.sql(f"select * from {table} limit 0").pl()
    return {name: dtype for name, dtype in frame.schema.items() if name not in defaults}


# table -> statements that bring a table created by an older DDL up to date (idempotent; run after the DDL)
MIGRATIONS: dict[str, tuple[str, ...]] = {
    "monitoring.drift": tuple(
        f"alter table monitoring.drift add column if not exists {c}"
        for c in ("ks_pvalue double", "ks_pvalue_adjusted double", "n_reference bigint", "n_current bigint",
                  "drifted boolean", "model_id varchar")),
    "signals.latest": tuple(
        f"alter table signals.latest add column if not exists {c}"
        for c in ("interval varchar", "p_down double", "p_flat double", "p_up double", "expected_move double",
                  "price double", "created_at timestamp default current_timestamp", "version varchar",
                  "train_start timestamp", "train_end timestamp")),
    "models.registry": tuple(
        f"alter table models.registry add column if not exists {c}"
        for c in ("version varchar", "role varchar", "artifact_sha256 json", "purged boolean default false")),
    "backtest.runs": ("alter table backtest.runs add column if not exists family varchar",),
    # per-bar log-loss of a run's direction head (-log p of the true class; NULL: no prediction or label)
    "backtest.equity": ("alter table backtest.equity add column if not exists log_loss double",),
}


# The model lifecycle's views: what "the current version" of an architecture is, in one place, so every reader
# (backtests, drift, signals, the training check) changes one table name. The current version of an architecture
# and interval is its champion (models.champions); where none is recorded (a warehouse written before versions,
# or rows a test wrote by hand) it is the newest version in models.registry (rows without a version count as one).
LIFECYCLE_TABLES = ("models.registry", "models.versions", "models.champions", "models.promotions")
VIEWS: dict[str, str] = {
    "models.current_versions": """
        create or replace view models.current_versions as
        with newest as (
            select architecture, interval, arg_max(coalesce(version, ''), created_at) as version
            from models.registry group by all)
        select n.architecture, n.interval, coalesce(c.version, n.version) as version, c.version is not null as champion
        from newest n left join models.champions c
          on c.architecture = n.architecture and c.interval is not distinct from n.interval""",
    "models.current": """
        create or replace view models.current as
        select r.* from models.registry r join models.current_versions v
          on v.architecture = r.architecture and v.interval is not distinct from r.interval
         and v.version = coalesce(r.version, '')
        where coalesce(r.role, 'fold') = 'fold'""",
    "models.live": """
        create or replace view models.live as
        select r.* from models.registry r join models.current_versions v
          on v.architecture = r.architecture and v.interval is not distinct from r.interval
         and v.version = coalesce(r.version, '')
        where r.role = 'live'""",
}


def _create_table(con: duckdb.DuckDBPyConnection, table: str) -> None:
    """The table's DDL, then its migrations (columns added since older warehouse files were written); a table
    of the model lifecycle brings the others and the views of the current version with it."""
    for name in (LIFECYCLE_TABLES if table in LIFECYCLE_TABLES else (table,)):
        con.execute(table_ddl(name))
        for statement in MIGRATIONS.get(name, ()):
            con.execute(statement)
    if table in LIFECYCLE_TABLES:
        for ddl in VIEWS.values():
            con.execute(ddl)


@dataclasses.dataclass(frozen=True)
class Replacement:
    """One table's part of a write: delete the rows matching ``where_sql``, insert ``frame``."""

    table: str
    frame: pl.DataFrame
    where_sql: str
    params: Sequence | None = None


class WarehouseLocked(RuntimeError):
    """The DuckDB file is held by another writing process."""


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text or "conflicting" in text or "being used" in text


class Warehouse:
    """One DuckDB file. Cheap to construct; holds no open connection."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        # Test hook: called inside the transaction after each table's write (fault injection).
        self._after_write: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return f"Warehouse({str(self.path)!r})"

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; retries with backoff while the file is locked."""
        if read_only and not self.path.exists():
            raise FileNotFoundError(
                f"warehouse {self.path} does not exist yet: run `make demo` (or materialize the market assets) first"
            )
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLocked(
                        f"warehouse {self.path} is locked by another process (a running Dagster writer?): "
                        f"waited {self.lock_timeout_s:.0f}s. Retry when it finishes. DuckDB said: {exc}"
                    ) from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 2.0)
        try:
            con.execute("set TimeZone = 'UTC'")
            yield con
        finally:
            con.close()

    def ensure_schema(self, tables: Sequence[str] | None = None) -> None:
        """Create the schemas and tables (all of TABLES by default); safe to repeat."""
        with self.connect() as con:
            for schema in SCHEMAS:
                con.execute(f"create schema if not exists {schema}")
            for name in tables or TABLES:
                _create_table(con, name)

    def replace_rows(
        self,
        table: str,
        frame: pl.DataFrame,
        where_sql: str,
        params: Sequence | None = None,
    ) -> int:
        """Delete the rows matching ``where_sql`` and insert ``frame``, in one transaction.

        ``frame`` columns are matched to the table by name; columns it lacks
        take their defaults (``ingested_at``). On any error the transaction is
        rolled back and the table keeps exactly the rows it had.
        Returns the number of rows deleted.
        """
        return self.replace_tables([Replacement(table, frame, where_sql, params)])[table]

    def replace_tables(self, replacements: Sequence["Replacement"]) -> dict[str, int]:
        """Apply several :meth:`replace_rows` in ONE transaction: every table changes, or none does.

        An asset that writes more than one table (backtest runs, trades, equity,
        metrics; a model's registry row and its predictions) uses this, so a
        crash between two tables never leaves them from different runs.
        Returns the rows deleted per table.
        """
        for r in replacements:
            table_ddl(r.table)  # an unknown table fails here, before any connection
        deleted: dict[str, int] = {}
        with self.connect() as con:
            for r in replacements:
                con.execute(f"create schema if not exists {r.table.split('.')[0]}")
                _create_table(con, r.table)
            con.execute("begin transaction")
            try:
                for i, r in enumerate(replacements):
                    rows = con.execute(f"delete from {r.table} where {r.where_sql}", list(r.params or [])).fetchall()
                    deleted[r.table] = deleted.get(r.table, 0) + (int(rows[0][0]) if rows else 0)
                    if r.frame.height:
                        name = f"_incoming_{i}"
                        con.register(name, r.frame)
                        con.execute(f"insert into {r.table} by name select * from {name}")
                        con.unregister(name)
                    if self._after_write is not None:
                        self._after_write(r.table)
                con.execute("commit")
            except BaseException:
                con.execute("rollback")
                raise
        return deleted

    def query(self, sql: str, params: Sequence | None = None, read_only: bool = True) -> pl.DataFrame:
        """Run one query and return a polars frame."""
        with self.connect(read_only=read_only) as con:
            return con.sql(sql, params=list(params) if params else None).pl()

    def table_exists(self, table: str) -> bool:
        schema, name = table.split(".", 1)
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as con:
            rows = con.execute(
                "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                [schema, name],
            ).fetchall()
        return rows[0][0] > 0
