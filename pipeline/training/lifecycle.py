"""The model lifecycle: versions, the promotion gate, champions, retention, promote and rollback.

Every training of an architecture is a **version** (:func:`pipeline.training.walk_forward.model_version`: a hash
of the code version, the data fingerprint and the recipe, so a resumed or repeated training is the same version).
Its walk-forward folds and its live refit are rows of ``models.registry`` (``version``, ``role`` 'fold' / 'live',
``artifact_sha256``); its artifacts live under ``artifacts/models/<architecture>/<version>/`` and are never
overwritten once stored. ``models.versions`` holds one row per version.

The **champion** of an architecture and interval (``models.champions``) is the version whose live refit trades;
the views ``models.current`` (its folds: backtests, drift, reports) and ``models.live`` (its live refit: signals)
are defined in :mod:`pipeline.warehouse`. A stored version is judged by :func:`judge` against the champion on the
test bars they share: promoted when its out-of-sample log-loss is at most the champion's plus
``promotion_log_loss_tolerance`` and its net Sharpe (the folds' edge rules after costs) at least the champion's
minus ``promotion_sharpe_tolerance``; the first version is promoted; ``force`` (a manual materialization) promotes
regardless. Every decision is a row of ``models.promotions``. The version row, its registry rows, its predictions,
the decision and the new champion are written in ONE transaction; retention (``keep_versions``) then marks old
versions purged (in a transaction) before it deletes their artifact folders, so no row ever points at a missing
artifact without saying so.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.core.positions import EdgeRule, edge_targets
from pipeline.core.timegrid import interval_ms
from pipeline.training.artifacts import ArtifactError, verify_artifact
from pipeline.training.report import check_training
from pipeline.warehouse import Replacement, table_schema

PROBA = ["p_down", "p_flat", "p_up"]


class LifecycleError(ValueError):
    """A lifecycle command that cannot be done (unknown version, missing artifacts, no previous champion)."""


@dataclasses.dataclass
class Decision:
    promoted: bool
    action: str  # first / gate / force / same
    reason: str
    champion_before: str | None
    metrics: dict

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def champion_of(warehouse, architecture: str, interval: str) -> dict | None:
    """The models.champions row of ``architecture`` / ``interval`` (None: no champion yet)."""
    if not warehouse.table_exists("models.champions"):
        return None
    rows = warehouse.query("select * from models.champions where architecture = ? and interval = ?",
                           [architecture, interval])
    return rows.row(0, named=True) if rows.height else None


def _rule(metrics: str | dict) -> EdgeRule:
    m = json.loads(metrics) if isinstance(metrics, str) else metrics
    r = m["edge_rule"]
    margin = r.get("margin")
    return EdgeRule(tuple(float(v) for v in r["class_returns"]), float(r["round_trip_cost"]),
                    math.inf if margin is None else float(margin), float(r.get("fraction", 1.0)),
                    bool(r.get("allow_short", True)))


def _positions(preds: pl.DataFrame, metrics_of: dict[str, str], labels: pl.DataFrame, horizon: int) -> pl.DataFrame:
    """Per test bar: the model's probabilities, its fold's edge-rule target over the fold's segment (state carried
    bar to bar as the backtest does) and the bar's net PnL (target x forward return / horizon, half the round trip
    per unit traded)."""
    out = []
    joined = preds.join(labels, on=["symbol", "ts"], how="left")
    for (model_id, symbol), part in joined.sort("ts").group_by(["model_id", "symbol"], maintain_order=True):
        rule = _rule(metrics_of[model_id])
        target = edge_targets(part.select(PROBA).to_numpy(), rule)
        traded = np.abs(np.diff(np.concatenate(([0.0], target))))
        fwd = part["fwd_return"].cast(pl.Float64).to_numpy()
        pnl = target * fwd / horizon - 0.5 * rule.round_trip_cost * traded
        out.append(part.select("symbol", "ts", *PROBA).with_columns(target=pl.Series(target), pnl=pl.Series(pnl)))
    return pl.concat(out) if out else pl.DataFrame()


def _scores(frame: pl.DataFrame, prefix: str, labels: np.ndarray, bars_per_year: float) -> dict:
    p = frame.select([f"{prefix}{c}" for c in PROBA]).to_numpy()
    ok = labels >= 0
    ll = float(-np.log(np.clip(p[ok, labels[ok]], 1e-12, 1)).mean()) if ok.any() else math.nan
    per_bar = frame.group_by("ts").agg(pl.col(f"{prefix}pnl").mean()).sort("ts")[f"{prefix}pnl"].to_numpy()
    per_bar = per_bar[np.isfinite(per_bar)]
    sd = float(per_bar.std()) if per_bar.size > 1 else 0.0
    sharpe = float(per_bar.mean() / sd * math.sqrt(bars_per_year)) if sd > 0 else 0.0
    return {"oos_log_loss": ll, "net_sharpe": sharpe, "net_pnl": float(per_bar.sum())}


def compare_on_shared_bars(warehouse, outcome, champion_version: str, interval: str) -> dict:
    """The challenger (``outcome``) and the champion's stored folds on the test bars both predicted: log-loss,
    net Sharpe and PnL of each (labels and returns of the challenger's data)."""
    champ = warehouse.query(
        "select p.model_id, p.symbol, p.ts, p.p_down, p.p_flat, p.p_up from predictions.oos p "
        "join models.registry r using (model_id) where r.architecture = ? and r.interval = ? and r.version = ? "
        "and coalesce(r.role, 'fold') = 'fold'", [outcome.architecture, interval, champion_version])
    champ_metrics = dict(warehouse.query(
        "select model_id, cast(metrics as varchar) as m from models.registry where architecture = ? and "
        "interval = ? and version = ?", [outcome.architecture, interval, champion_version]).iter_rows())
    mine_metrics = dict(zip(outcome.registry["model_id"], outcome.registry["metrics"]))
    labels = outcome.test_labels.unique(["symbol", "ts"])
    new = _positions(outcome.predictions.select("model_id", "symbol", "ts", *PROBA), mine_metrics, labels,
                     outcome.horizon)
    old = _positions(champ, champ_metrics, labels, outcome.horizon) if champ.height else pl.DataFrame()
    if new.height == 0 or old.height == 0:
        return {"shared_bars": 0}
    shared = new.join(old, on=["symbol", "ts"], suffix="_champion").join(
        labels.select("symbol", "ts", "label_class"), on=["symbol", "ts"]).rename(
        {c: f"new_{c}" for c in (*PROBA, "target", "pnl")}).rename(
        {f"{c}_champion": f"champion_{c}" for c in (*PROBA, "target", "pnl")})
    if shared.height == 0:
        return {"shared_bars": 0}
    y = shared["label_class"].to_numpy()
    bars_per_year = 365 * 86_400_000 / interval_ms(interval)
    return {"shared_bars": shared.height, "first_shared": str(shared["ts"].min()), "last_shared": str(shared["ts"].max()),
            "challenger": _scores(shared, "new_", y, bars_per_year),
            "champion": _scores(shared, "champion_", y, bars_per_year)}


def judge(warehouse, outcome, settings: Settings, force: bool = False) -> Decision:
    """Whether the stored ``outcome`` becomes its architecture's champion (see the module docstring)."""
    interval = outcome.interval
    champion = champion_of(warehouse, outcome.architecture, interval)
    before = champion["version"] if champion else None
    if before == outcome.version:
        return Decision(True, "same", f"version {outcome.version} is the champion already (identical training)",
                        before, {})
    if champion is None:
        return Decision(True, "first", f"the first version of {outcome.architecture}: promoted", before, {})
    sound, details = check_training(outcome.registry, outcome.predictions, outcome.weights_finite,
                                    settings.oos_log_loss_tolerance)
    metrics = compare_on_shared_bars(warehouse, outcome, before, interval)
    metrics["tolerances"] = {"log_loss": settings.promotion_log_loss_tolerance,
                             "sharpe": settings.promotion_sharpe_tolerance}
    if force:
        return Decision(True, "force", f"promotion forced over champion {before} (manual run)", before, metrics)
    text, ll_ok, sharpe_ok = "", False, False
    if metrics["shared_bars"]:
        new, old = metrics["challenger"], metrics["champion"]
        tol_ll, tol_s = settings.promotion_log_loss_tolerance, settings.promotion_sharpe_tolerance
        ll_ok = new["oos_log_loss"] <= old["oos_log_loss"] + tol_ll
        sharpe_ok = new["net_sharpe"] >= old["net_sharpe"] - tol_s
        text = (f"on {metrics['shared_bars']} shared test bars: OOS log-loss {new['oos_log_loss']:.4f} vs champion "
                f"{old['oos_log_loss']:.4f} ({'within' if ll_ok else 'worse than'} +{tol_ll}), net Sharpe "
                f"{new['net_sharpe']:.2f} vs {old['net_sharpe']:.2f} ({'within' if sharpe_ok else 'worse than'} "
                f"-{tol_s})")
    if not sound:
        return Decision(False, "gate", f"fails the training check (weights finite {details['weights_finite']}, "
                        f"OOS log-loss {details['oos_log_loss']:.4f} vs prior {details['prior_log_loss']:.4f}, "
                        f"tolerance {details['log_loss_tolerance']}){'; ' + text if text else ''}: stays a "
                        "challenger", before, metrics)
    if metrics["shared_bars"] == 0:
        return Decision(False, "gate", f"no test bar shared with champion {before}: nothing to compare, stays a "
                        "challenger (promote it by hand with `convtrade models promote`)", before, metrics)
    if ll_ok and sharpe_ok:
        return Decision(True, "gate", f"not worse than champion {before} {text}: promoted", before, metrics)
    return Decision(False, "gate", f"worse than champion {before} {text}: stays a challenger", before, metrics)


def _registry_rows(outcome) -> pl.DataFrame:
    schema = table_schema("models.registry")
    frames = [outcome.registry] + ([outcome.live] if outcome.live is not None and outcome.live.height else [])
    rows = pl.concat(frames, how="diagonal_relaxed")
    return rows.with_columns([pl.col(c).cast(t) for c, t in schema.items() if c in rows.columns])


def _promotion_row(architecture, interval, version, before, after, promoted, action, reason, metrics) -> pl.DataFrame:
    return pl.DataFrame([{"architecture": architecture, "interval": interval, "at": _now(), "version": version,
                          "from_version": before, "to_version": after, "promoted": promoted, "action": action,
                          "reason": reason, "metrics": json.dumps(metrics, default=str)}],
                        schema={"architecture": pl.String, "interval": pl.String, "at": pl.Datetime("us"),
                                "version": pl.String, "from_version": pl.String, "to_version": pl.String,
                                "promoted": pl.Boolean, "action": pl.String, "reason": pl.String,
                                "metrics": pl.String})


def _champion_row(architecture, interval, version, previous, reason) -> pl.DataFrame:
    return pl.DataFrame([{"architecture": architecture, "interval": interval, "version": version,
                          "previous_version": previous, "reason": reason, "since": _now()}],
                        schema={"architecture": pl.String, "interval": pl.String, "version": pl.String,
                                "previous_version": pl.String, "reason": pl.String, "since": pl.Datetime("us")})


def store_version(warehouse, outcome, settings: Settings | None = None, force: bool = False) -> dict:
    """Store a trained version, judge it and apply retention (see the module docstring)."""
    settings = settings or Settings()
    if outcome.registry.height == 0:  # nothing trained, or identical to a stored version
        note = (f"version {outcome.version} is stored already (same code, data and settings): nothing changed"
                if outcome.reused else None)
        return {"models.registry": 0, "predictions.oos": 0, "promotion": None, "note": note}
    arch, interval, version = outcome.architecture, outcome.interval, outcome.version
    decision = judge(warehouse, outcome, settings, force)
    rows = _registry_rows(outcome)
    live = outcome.live if outcome.live is not None else pl.DataFrame()
    ll = acc = None
    if outcome.test_labels is not None and outcome.predictions.height:
        j = outcome.predictions.join(outcome.test_labels.unique(["symbol", "ts"]), on=["symbol", "ts"])
        p, y = j.select(PROBA).to_numpy(), j["label_class"].to_numpy()
        ok = y >= 0
        if ok.any():
            ll = float(-np.log(np.clip(p[ok, y[ok]], 1e-12, 1)).mean())
            acc = float((p[ok].argmax(1) == y[ok]).mean())
    version_row = pl.DataFrame([{
        "architecture": arch, "interval": interval, "version": version, "code_version": outcome.code_version,
        "data_fingerprint": outcome.data_fingerprint, "settings": outcome.settings, "trigger": outcome.trigger,
        "folds": int(outcome.registry.height),
        "live_train_start": live["train_start"].min() if live.height else None,
        "live_train_end": live["train_end"].max() if live.height else None,
        "oos_log_loss": ll, "oos_accuracy": acc, "purged": False, "created_at": _now()}],
        schema_overrides={"live_train_start": pl.Datetime("us"), "live_train_end": pl.Datetime("us"),
                          "oos_log_loss": pl.Float64, "oos_accuracy": pl.Float64, "folds": pl.Int32})
    key = "architecture = ? and interval = ? and version = ?"
    ids = rows["model_id"].to_list()
    replacements = [
        Replacement("predictions.oos", outcome.predictions,
                    f"model_id in (select model_id from models.registry where {key}) "
                    "or list_contains(?::varchar[], model_id)", [arch, interval, version, ids]),
        Replacement("models.registry", rows, f"({key}) or list_contains(?::varchar[], model_id)",
                    [arch, interval, version, ids]),
        Replacement("models.versions", version_row, key, [arch, interval, version]),
    ]
    if decision.action != "same":
        after = version if decision.promoted else decision.champion_before
        replacements.append(Replacement("models.promotions", _promotion_row(
            arch, interval, version, decision.champion_before, after, decision.promoted, decision.action,
            decision.reason, decision.metrics), "false"))
        if decision.promoted:
            replacements.append(Replacement("models.champions", _champion_row(
                arch, interval, version, decision.champion_before, decision.reason),
                "architecture = ? and interval = ?", [arch, interval]))
    warehouse.replace_tables(replacements)
    purged = purge_versions(warehouse, arch, interval, settings.keep_versions)
    return {"models.registry": rows.height, "predictions.oos": outcome.predictions.height,
            "promotion": decision.as_dict(), "purged": purged, "note": None}


def purge_versions(warehouse, architecture: str, interval: str, keep: int) -> list[str]:
    """Keep the artifacts of ``keep`` versions: the champion and its predecessor always, then the newest others;
    the rest are marked purged (registry rows and version rows, one transaction), then their folders deleted."""
    versions = warehouse.query(
        "select version from models.versions where architecture = ? and interval = ? and not coalesce(purged, false) "
        "order by created_at desc", [architecture, interval])["version"].to_list()
    champion = champion_of(warehouse, architecture, interval)
    kept = [v for v in ((champion or {}).get("version"), (champion or {}).get("previous_version")) if v]
    for v in versions:
        if len(kept) >= keep:
            break
        if v not in kept:
            kept.append(v)
    gone = [v for v in versions if v not in kept]
    if not gone:
        return []
    paths = warehouse.query("select distinct artifact_path from models.registry where architecture = ? and "
                            "interval = ? and list_contains(?::varchar[], version)",
                            [architecture, interval, gone])["artifact_path"].to_list()
    with warehouse.connect() as con:
        con.execute("begin transaction")
        try:
            con.execute("update models.registry set purged = true where architecture = ? and interval = ? and "
                        "list_contains(?::varchar[], version)", [architecture, interval, gone])
            con.execute("update models.versions set purged = true where architecture = ? and interval = ? and "
                        "list_contains(?::varchar[], version)", [architecture, interval, gone])
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
    for path in paths:  # marked first: a kill here leaves files of a purged row, never a row without its files
        p = Path(path)
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
        if p.parent.name in gone and p.parent.exists() and not any(p.parent.iterdir()):
            p.parent.rmdir()
        elif p.parent.name in gone and p.parent.exists():
            shutil.rmtree(p.parent, ignore_errors=True)
    return gone


# -- commands ----------------------------------------------------------------------------------------------------


def _version_rows(warehouse, architecture: str, interval: str, version: str) -> pl.DataFrame:
    if not warehouse.table_exists("models.registry"):
        raise LifecycleError("models.registry does not exist: train a model first (make demo)")
    rows = warehouse.query("select model_id, role, artifact_path, cast(artifact_sha256 as varchar) as sha, purged "
                           "from models.registry where architecture = ? and interval = ? and version = ?",
                           [architecture, interval, version])
    if rows.height == 0:
        known = warehouse.query("select version from models.versions where architecture = ? and interval = ? "
                                "order by created_at desc", [architecture, interval])["version"].to_list()
        raise LifecycleError(f"{architecture} (interval {interval}) has no version {version!r}; its versions: "
                             f"{', '.join(known) or 'none'} (convtrade models list)")
    return rows


def _check_artifacts(rows: pl.DataFrame, architecture: str, version: str) -> None:
    if rows["purged"].fill_null(False).any():
        raise LifecycleError(f"{architecture} version {version}: its artifacts were purged by retention "
                             "(CONVTRADE_KEEP_VERSIONS); it cannot trade again, retrain instead")
    if not (rows["role"] == "live").any():
        raise LifecycleError(f"{architecture} version {version} has no live refit (trained before versions had "
                             "one): retrain it")
    for row in rows.iter_rows(named=True):
        try:
            verify_artifact(row["artifact_path"], row["sha"])
        except ArtifactError as exc:
            raise LifecycleError(f"{architecture} version {version}: {exc}") from exc


def _set_champion(warehouse, architecture, interval, version, previous, before, action, reason) -> None:
    warehouse.replace_tables([
        Replacement("models.champions", _champion_row(architecture, interval, version, previous, reason),
                    "architecture = ? and interval = ?", [architecture, interval]),
        Replacement("models.promotions", _promotion_row(architecture, interval, version, before, version, True,
                                                        action, reason, {}), "false"),
    ])


def _previous_of(warehouse, architecture: str, interval: str, version: str) -> str | None:
    """The champion before ``version``: where the latest promotion to it (not a rollback) came from."""
    rows = warehouse.query(
        "select from_version from models.promotions where architecture = ? and interval = ? and to_version = ? "
        "and promoted and action <> 'rollback' and version = ? order by \"at\" desc limit 1",
        [architecture, interval, version, version])
    return rows["from_version"][0] if rows.height else None


def promote(warehouse, architecture: str, version: str, interval: str, reason: str | None = None) -> str:
    """Make ``version`` the champion (``convtrade models promote``); its artifacts verified first."""
    rows = _version_rows(warehouse, architecture, interval, version)
    champion = champion_of(warehouse, architecture, interval)
    before = champion["version"] if champion else None
    if before == version:
        raise LifecycleError(f"{architecture} version {version} is the champion already")
    _check_artifacts(rows, architecture, version)
    why = reason or f"promoted by hand over {before}"
    _set_champion(warehouse, architecture, interval, version, before, before, "promote", why)
    return f"{architecture}: champion {before} -> {version} ({why})"


def rollback(warehouse, architecture: str, interval: str) -> str:
    """Back to the previous champion (``convtrade models rollback``); its artifacts verified first."""
    champion = champion_of(warehouse, architecture, interval)
    if champion is None:
        raise LifecycleError(f"{architecture} (interval {interval}) has no champion: nothing to roll back")
    current = champion["version"]
    target = _previous_of(warehouse, architecture, interval, current)
    if target is None:
        raise LifecycleError(f"{architecture}: champion {current} has no previous champion to roll back to")
    rows = _version_rows(warehouse, architecture, interval, target)
    _check_artifacts(rows, architecture, target)
    _set_champion(warehouse, architecture, interval, target, _previous_of(warehouse, architecture, interval, target),
                  current, "rollback", f"rolled back from {current}")
    return f"{architecture}: champion {current} -> {target} (rollback)"


def list_versions(warehouse, architecture: str | None = None) -> pl.DataFrame:
    """Every version: champion or not, trigger, time, live training range, OOS metrics, purged."""
    if not warehouse.table_exists("models.versions"):
        return pl.DataFrame()
    where = "where v.architecture = ?" if architecture else ""
    return warehouse.query(
        "select v.architecture, v.interval, v.version, "
        "case when c.version = v.version then 'champion' when v.purged then 'purged' else 'challenger' end as status, "
        "v.trigger, v.created_at, v.code_version, v.live_train_start, v.live_train_end, v.folds, "
        "round(v.oos_log_loss, 4) as oos_log_loss, round(v.oos_accuracy, 4) as oos_accuracy, v.purged "
        "from models.versions v left join models.champions c on c.architecture = v.architecture "
        f"and c.interval = v.interval {where} order by v.architecture, v.created_at desc",
        [architecture] if architecture else None)
