"""Settings: symbols, intervals, dates, source, costs and model sizes.

One frozen record, built from defaults that make ``make demo`` finish fast,
overridden by environment variables (``CONVTRADE_*``) and, in Dagster, by run
config through :class:`assets.resources.SettingsResource`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path

# config.py stands on the floor (pipeline.core) only: the vocabularies, the cost model's defaults and the
# column lists it validates against live there, and the domains import them from there too.
from pipeline.core.choices import (AUGMENTATIONS, BYBIT_CATEGORIES, CLASS_WEIGHTINGS, GAP_POLICIES, SOURCES,
                                   symbol_problem)
from pipeline.core.columns import MODEL_INPUT_COLUMNS
from pipeline.core.costs import COST_SETTINGS, DEFAULT_MAINTENANCE_MARGIN_RATE, CostModel
from pipeline.core.timegrid import interval_ms


# The first daily partition by default: a fixed day, so the partition set and the
# synthetic market do not move under a running deployment (about one year of
# history when this was written; set CONVTRADE_START for more or less).
DEFAULT_START = "2025-11-01"


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    source: str = "synthetic"
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    intervals: tuple[str, ...] = ("60",)
    start: str = DEFAULT_START
    # Files source: folder of candle exports (layout of ../shared/data).
    files_dir: Path = Path("../shared/data")
    # Bybit source
    bybit_category: str = "linear"
    bybit_testnet: bool = False
    orderbook_levels: int = 5
    # A source that returns fewer candles for a window than the warehouse holds (an empty or cut-short
    # export, a symbol missing) fails the ingest and writes nothing; true lets it replace the window.
    allow_shrink: bool = False
    # Dagster's sqlite run history without fsync (PRAGMA synchronous=OFF; assets/run_safety.py): true keeps
    # Dagster's default of an fsync per event, which costs ~10 ms each on an ordinary disk.
    dagster_fsync: bool = False
    # Replay clock: a UTC time ("2026-02-04T00:15", "2026-02-04") the pipeline takes for now (Settings.now()):
    # the sources return no bar closing after it, the month in progress ends with its day and the drift
    # sensor's cool-down runs on it. Empty: the wall clock. For replays and tests of the automation.
    clock: str = ""
    # Synthetic source
    seed: int = 7
    planted_pattern: bool = False
    # A planted regime change (synthetic source): from this UTC day on ("2026-01-20", or "2026-01-20,ETHUSDT" for
    # the listed symbols only; empty: none) the symbols' shocks are scaled by regime_shift_volatility and their
    # price drifts by regime_shift_drift daily standard deviations a day. Days before it are unchanged.
    regime_shift: str = ""
    regime_shift_volatility: float = 2.0
    regime_shift_drift: float = -0.5
    # Costs (Bybit defaults for perpetuals, as fractions)
    taker_fee: float = CostModel.taker_fee      # one home for the defaults: pipeline.core.costs.CostModel
    maker_fee: float = CostModel.maker_fee
    slippage_bps: float = CostModel.slippage_bps
    # Maintenance margin rate, as a fraction of position value: one rate for every symbol ("0.005", Bybit's
    # first BTCUSDT tier) and/or SYMBOL=rate pairs ("0.01,BTCUSDT=0.005,ETHUSDT=0.005"); a bare value is the
    # rate of the symbols not named (default 0.005). Read through maintenance_margin_rate(symbol).
    maintenance_margin: str = "0.005"
    # Gaps in the candle grid (features): see GAP_POLICIES
    gap_policy: str = "segment"
    max_fill_bars: int = 12             # "fill": longest gap (missing bars) filled; longer ones are segmented
    # Model sizes and training (pipeline.training.recipe.TrainingConfig.from_settings reads these).
    # Defaults are the demo profile: every architecture (sequence and image), every fold, on the offline
    # default (3 symbols, 1h, ~1 year) within `make demo`'s 15 minutes on 2 cores. `make evaluate` sets
    # CONVTRADE_MAX_TRAIN_WINDOWS=5000 (Makefile EVAL_ENV); everything else is the same.
    window: int = 64                    # W bars per input window
    model_variant: str = "default"      # zoo variant (the CPU-sized "default" of each architecture)
    horizon: int = 1                    # label horizon in bars (a horizon of features.labels)
    n_folds: int = 6                    # walk-forward folds
    train_min_fraction: float = 0.4     # share of the time grid before the first test block
    embargo_bars: int = 24              # extra gap after the purge (purge = horizon)
    validation_fraction: float = 0.15   # tail of each fold's training time used for early stopping
    rolling_train: bool = False         # rolling (fixed-length) instead of expanding training windows
    pooled: bool = True                 # one model over all symbols (one-hot symbol channels)
    epochs: int = 3
    batch_size: int = 256
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 0.5          # linear LR warm-up before the cosine decay, in epochs
    patience: int = 2                   # early stopping: epochs without a better validation loss
    grad_clip: float = 1.0
    max_train_windows: int = 2000       # windows per epoch, drawn afresh from the whole training span (0: all)
    training_seed: int = 0
    training_threads: int = 0           # torch threads while training; 0: half the logical CPUs, at least 1
    class_weighting: str = "balanced"   # "balanced" (inverse frequency), "focal" or "none"
    label_smoothing: float = 0.05
    return_loss_weight: float = 0.5     # Huber on the forward return (scaled by its training std)
    volatility_loss_weight: float = 0.25
    sharpe_loss_weight: float = 0.0     # differentiable Sharpe of the position p_up - p_down
    augment: str = ""                   # comma list of jitter, scaling, time_warp, window_slice
    # Transfer learning (pipeline.training.pretrain): the *_simclr image models pre-train their backbone per
    # fold with SimCLR on that fold's training-span charts (labels unused), then fine-tune as above.
    pretrain_epochs: int = 2            # SimCLR epochs per fold (0: no pre-training, e.g. weights file only)
    pretrain_max_images: int = 1024     # charts per pre-training epoch, drawn afresh from the span (0: all)
    pretrain_batch_size: int = 128      # charts per step (2 views each: 2N - 2 negatives per view)
    pretrain_temperature: float = 0.2   # NT-Xent temperature
    pretrain_learning_rate: float = 1e-3
    pretrain_projection_dim: int = 64   # output of the projection head (dropped after pre-training)
    pretrained_weights: str = ""        # local .safetensors / torchvision .pth to start from (never downloaded)
    # Drift monitoring (pipeline.monitoring.drift) and the drift sensor (assets.automation)
    drift_psi_threshold: float = 0.2    # PSI at or above this: the feature drifted
    drift_ks_pvalue: float = 0.01       # KS p-value below this, after Bonferroni over features: drifted
    drift_psi_bins: int = 10            # quantile bins of the reference window
    drift_recent_bars: int = 336        # current window: the newest N bars (PSI noise ~ (bins-1)(1/n_cur + 1/n_ref))
    drift_accuracy_bars: int = 168      # accuracy decay: the newest N predicted bars with a known label
    drift_accuracy_drop: float = 0.15   # decayed: recent accuracy below the walk-forward accuracy by this (~4 sds at 168)
    drift_cooldown_hours: float = 24.0  # no second drift-triggered retrain within this many hours
    # Which model inputs the drift report compares (comma list of MODEL_INPUT_COLUMNS names; empty: all of them).
    # Default: the near-i.i.d., scale-free bar-shape features. Level features (volatility, trend, higher-timeframe
    # RSI) are autocorrelated and move with the market's own regimes, so PSI / KS on them fire every day (README,
    # Drift: calibration measured on the replayed synthetic market).
    drift_features: str = "log_ret_1,close_pos,body_ratio"
    oos_log_loss_tolerance: float = 0.05  # training check: OOS log-loss may exceed the class prior's by this
    # The verdict (pipeline.backtest.significance): paired tests on the common test span of a market
    bootstrap_block_days: int = 0       # circular block length in days; 0: the rule ceil(n_days ** (1/3))
    bootstrap_samples: int = 2000       # bootstrap resamples of each Sharpe-difference test
    bootstrap_seed: int = 0             # seed of the resamples (each test draws from its own child stream)
    significance_level: float = 0.05    # two-sided level of the tests and confidence intervals (0.05: 95 %)
    power: float = 0.8                  # power at which the smallest resolvable Sharpe difference is quoted
    # Model lifecycle (pipeline.training.lifecycle): a new version is promoted to champion only when, on the test
    # bars it shares with the champion, its OOS log-loss is at most the champion's + promotion_log_loss_tolerance
    # (nats) and its net Sharpe (annualised, the edge rule after costs) at least the champion's -
    # promotion_sharpe_tolerance; keep_versions: the newest versions whose artifacts are kept (the champion and
    # its predecessor are never purged).
    promotion_log_loss_tolerance: float = 0.005
    promotion_sharpe_tolerance: float = 0.5
    keep_versions: int = 5
    # After the walk-forward, fit the live model on every labelled bar (what signals trade). false: the newest fold
    # trades, as before versions had a live refit (faster replays of the automation).
    live_refit: bool = True

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"CONVTRADE_SOURCE={self.source!r}: use one of {', '.join(SOURCES)}")
        if self.bybit_category not in BYBIT_CATEGORIES:
            raise ValueError(
                f"CONVTRADE_BYBIT_CATEGORY={self.bybit_category!r}: use one of {', '.join(BYBIT_CATEGORIES)}"
            )
        for interval in self.intervals:
            interval_ms(interval)
        if self.gap_policy not in GAP_POLICIES:
            raise ValueError(f"CONVTRADE_GAP_POLICY={self.gap_policy!r}: use one of {', '.join(GAP_POLICIES)}")
        if self.max_fill_bars < 0:
            raise ValueError(f"CONVTRADE_MAX_FILL_BARS={self.max_fill_bars!r} must be >= 0 (a number of bars)")
        if not self.symbols:
            raise ValueError("CONVTRADE_SYMBOLS is empty: name at least one symbol, e.g. BTCUSDT")
        for symbol in self.symbols:
            if problem := symbol_problem(symbol):
                raise ValueError(f"CONVTRADE_SYMBOLS: {problem}")
        try:
            dt.date.fromisoformat(self.start)
        except ValueError:
            raise ValueError(f"CONVTRADE_START={self.start!r} is not a date like 2025-01-01") from None
        self._check_costs()
        self._check_drift()
        self.now()  # a malformed CONVTRADE_CLOCK fails here, before any work
        self._check_training()
        self._check_verdict()

    def _check_verdict(self) -> None:
        """The verdict's test settings are usable (checked before any work)."""
        if self.bootstrap_block_days < 0:
            raise ValueError(f"CONVTRADE_BOOTSTRAP_BLOCK_DAYS={self.bootstrap_block_days!r}: must be >= 0 days "
                             "(0: the rule ceil(n ** (1/3)))")
        if self.bootstrap_samples < 100:
            raise ValueError(f"CONVTRADE_BOOTSTRAP_SAMPLES={self.bootstrap_samples!r}: must be >= 100 resamples")
        if self.bootstrap_seed < 0:
            raise ValueError(f"CONVTRADE_BOOTSTRAP_SEED={self.bootstrap_seed!r}: must be >= 0")
        if not 0.0 < self.significance_level < 0.5:
            raise ValueError(f"CONVTRADE_SIGNIFICANCE_LEVEL={self.significance_level!r}: must be in (0, 0.5), "
                             "e.g. 0.05")
        if not 0.5 <= self.power < 1.0:
            raise ValueError(f"CONVTRADE_POWER={self.power!r}: must be in [0.5, 1), e.g. 0.8")

    def _check_training(self) -> None:
        """Training settings usable before any work starts (a bad one otherwise fails after ingest and dbt)."""
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"CONVTRADE_{name.upper()}={getattr(self, name)!r}: {rule}")

        if self.keep_versions < 1:
            raise bad("keep_versions", "must be >= 1 (the champion and the version it replaced are always kept)")
        for name in ("window", "horizon", "n_folds", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise bad(name, "must be >= 1")
        for name in ("embargo_bars", "max_train_windows", "training_threads", "training_seed"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        for name in ("train_min_fraction", "validation_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise bad(name, "must be in (0, 1)")
        for name in ("learning_rate",):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        for name in ("weight_decay", "warmup_epochs", "grad_clip", "return_loss_weight", "volatility_loss_weight",
                     "sharpe_loss_weight", "oos_log_loss_tolerance", "promotion_log_loss_tolerance",
                     "promotion_sharpe_tolerance"):
            if not getattr(self, name) >= 0:
                raise bad(name, "must be >= 0")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise bad("label_smoothing", "must be in [0, 1)")
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise bad("class_weighting", f"use one of {', '.join(CLASS_WEIGHTINGS)}")
        unknown = [a.strip() for a in self.augment.split(",") if a.strip() and a.strip() not in AUGMENTATIONS]
        if unknown:
            raise bad("augment", f"unknown {', '.join(unknown)}: a comma list of {', '.join(AUGMENTATIONS)}")
        for name in ("pretrain_epochs", "pretrain_max_images"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if self.pretrain_max_images == 1:
            raise bad("pretrain_max_images", "must be 0 (all) or >= 2: a contrastive batch needs negatives")
        if self.pretrain_batch_size < 2:
            raise bad("pretrain_batch_size", "must be >= 2: a contrastive batch needs negatives")
        if self.pretrain_projection_dim < 1:
            raise bad("pretrain_projection_dim", "must be >= 1")
        for name in ("pretrain_temperature", "pretrain_learning_rate"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        if self.pretrained_weights and Path(self.pretrained_weights).suffix not in (".safetensors", ".pth", ".pt"):
            raise bad("pretrained_weights", "must name a local .safetensors or .pth/.pt state-dict file")

    def _check_costs(self) -> None:
        """The cost settings obey the cost model's rules (one home: ``CostModel.__post_init__``),
        checked here so a bad fee fails when the settings are built, before any work."""
        for name in COST_SETTINGS:
            value = getattr(self, name)
            try:
                CostModel(**{name: value})
            except (ValueError, TypeError) as exc:
                raise ValueError(f"CONVTRADE_{name.upper()}={value!r}: {exc}") from None
        parse_maintenance_margin(self.maintenance_margin)
        parse_regime_shift(self.regime_shift, self.symbols)
        if not (0.0 < self.regime_shift_volatility <= 10.0):
            raise ValueError(f"CONVTRADE_REGIME_SHIFT_VOLATILITY={self.regime_shift_volatility!r}: use a factor in (0, 10]")
        if not (abs(self.regime_shift_drift) <= 10.0):  # also rejects NaN
            raise ValueError(f"CONVTRADE_REGIME_SHIFT_DRIFT={self.regime_shift_drift!r}: use daily standard deviations "
                             "in [-10, 10]")

    def maintenance_margin_rate(self, symbol: str | None = None) -> float:
        """The maintenance margin rate of ``symbol`` (its own pair in ``maintenance_margin``, else the default)."""
        default, per_symbol = parse_maintenance_margin(self.maintenance_margin)
        return per_symbol.get(symbol, default)

    def _check_drift(self) -> None:
        """The drift settings are usable: positive windows and bins, thresholds in range."""
        if not (0.0 < self.drift_ks_pvalue < 1.0):
            raise ValueError(f"CONVTRADE_DRIFT_KS_PVALUE={self.drift_ks_pvalue!r}: must be in (0, 1), e.g. 0.01")
        if not self.drift_psi_threshold > 0:
            raise ValueError(f"CONVTRADE_DRIFT_PSI_THRESHOLD={self.drift_psi_threshold!r}: must be > 0, e.g. 0.2")
        for name in ("drift_psi_bins", "drift_recent_bars", "drift_accuracy_bars"):
            if getattr(self, name) < 2:
                raise ValueError(f"CONVTRADE_{name.upper()}={getattr(self, name)!r}: must be >= 2")
        if not (0.0 <= self.drift_accuracy_drop < 1.0):
            raise ValueError(f"CONVTRADE_DRIFT_ACCURACY_DROP={self.drift_accuracy_drop!r}: must be in [0, 1)")
        if not self.drift_cooldown_hours >= 0:
            raise ValueError(f"CONVTRADE_DRIFT_COOLDOWN_HOURS={self.drift_cooldown_hours!r}: must be >= 0 hours")
        _ = self.drift_columns  # unknown names fail here

    @property
    def drift_columns(self) -> list[str]:
        """The model inputs the drift report compares: ``drift_features`` in model-input order, or all of them."""
        names = _split(str(self.drift_features))
        if not names:
            return list(MODEL_INPUT_COLUMNS)
        if unknown := [n for n in names if n not in MODEL_INPUT_COLUMNS]:
            raise ValueError(f"CONVTRADE_DRIFT_FEATURES={self.drift_features!r}: {', '.join(unknown)} is not a model "
                             f"input; use names of pipeline.core.columns.MODEL_INPUT_COLUMNS, e.g. log_ret_1,rsi_14")
        return [c for c in MODEL_INPUT_COLUMNS if c in names]

    def now(self) -> dt.datetime:
        """The pipeline's now (timezone-aware UTC): the replay ``clock`` when set, else the wall clock."""
        if not self.clock:
            return dt.datetime.now(dt.timezone.utc)
        try:
            when = dt.datetime.fromisoformat(str(self.clock).strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"CONVTRADE_CLOCK={self.clock!r} is not a UTC time like 2026-02-04T00:15 "
                             "(or empty for the wall clock)") from None
        if when.tzinfo is not None and when.utcoffset() != dt.timedelta(0):
            raise ValueError(f"CONVTRADE_CLOCK={self.clock!r}: give the time in UTC (no offset, or +00:00 / Z)")
        return when.replace(tzinfo=dt.timezone.utc)

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def start_date(self) -> dt.date:
        return dt.date.fromisoformat(self.start)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then the settings file (``CONVTRADE_CONFIG``, else ``./convtrade.yaml``), then
        ``CONVTRADE_*`` variables, then explicit overrides."""
        return cls.resolve(env, **overrides)[0]

    @classmethod
    def resolve(cls, env: dict[str, str] | None = None, **overrides) -> tuple["Settings", dict[str, str]]:
        """The settings and, for each field, where its value came from: ``default``, ``FILE:LINE``,
        the environment variable's name, or ``override``. A bad value names its key, file and line."""
        env = dict(os.environ if env is None else env)
        values: dict = {}
        origin = {field.name: "default" for field in dataclasses.fields(cls)}
        path = settings_file_path(env)
        from_file = read_settings_file(path) if path is not None else {}
        fields = {field.name: field for field in dataclasses.fields(cls)}
        for name, (raw, line) in from_file.items():
            values[name] = _parse(fields[name], raw, f"{path}:{line}: {name}")
            origin[name] = f"{path}:{line}"
        for field in dataclasses.fields(cls):
            key = f"CONVTRADE_{field.name.upper()}"
            if field.name == "data_dir" and key not in env and "DATA_DIR" in env:
                key = "DATA_DIR"
            if key not in env:
                continue
            values[field.name] = _parse(field, env[key], key)
            origin[field.name] = key
        values.update(overrides)
        origin.update({name: "override" for name in overrides})
        for name in ("data_dir", "files_dir"):
            if name in values:
                values[name] = Path(values[name])
        for name in ("symbols", "intervals"):
            if name in values and isinstance(values[name], str):
                values[name] = _split(values[name])
            elif name in values:
                values[name] = tuple(values[name])
        try:
            return cls(**values), origin
        except ValueError as exc:  # a rule of __post_init__: say where the value came from
            name = _field_named_in(str(exc))
            if name is not None and origin.get(name, "").startswith(f"{path}:"):
                raise ValueError(f"{origin[name]}: {str(exc).replace(f'CONVTRADE_{name.upper()}', name, 1)}") from None
            raise


# The settings file: YAML, one `name: value` per setting (the Settings field names, e.g. `symbols: [BTCUSDT]`,
# `epochs: 3`). CONVTRADE_CONFIG names it (empty: no file); else convtrade.yaml in the working directory.
CONFIG_ENV = "CONVTRADE_CONFIG"
CONFIG_FILE = "convtrade.yaml"


def settings_file_path(env: dict[str, str]) -> Path | None:
    """The settings file in force, or None: ``CONVTRADE_CONFIG`` (must exist), else ``./convtrade.yaml``."""
    if CONFIG_ENV in env:
        if not env[CONFIG_ENV].strip():
            return None
        path = Path(env[CONFIG_ENV]).expanduser()
        if not path.is_file():
            raise ValueError(f"{CONFIG_ENV}={env[CONFIG_ENV]!r}: no such settings file")
        return path
    path = Path(CONFIG_FILE)
    return path if path.is_file() else None


def read_settings_file(path: Path) -> dict[str, tuple[str, int]]:
    """``{field: (value as text, line)}`` of a YAML settings file; unknown keys and non-scalar values fail
    with the key, the file and the line."""
    import yaml

    try:
        root = yaml.compose(Path(path).read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise ValueError(f"{path}:{root.start_mark.line + 1}: the settings file must be a mapping of name: value")
    known = {field.name for field in dataclasses.fields(Settings)}
    out: dict[str, tuple[str, int]] = {}
    for key_node, value_node in root.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        if key not in known:
            near = [n for n in known if n.startswith(key[:4])] if len(key) >= 4 else []
            hint = f" (did you mean {', '.join(sorted(near))}?)" if near else ""
            raise ValueError(f"{path}:{line}: unknown setting {key!r}{hint}; the names are the fields of "
                             "pipeline.config.Settings (`convtrade settings` lists them)")
        if key in out:
            raise ValueError(f"{path}:{line}: {key!r} is given twice (first on line {out[key][1]})")
        if isinstance(value_node, yaml.SequenceNode) and key in ("symbols", "intervals"):
            items = value_node.value
            if not all(isinstance(i, yaml.ScalarNode) for i in items):
                raise ValueError(f"{path}:{line}: {key} must be a list of names, e.g. [BTCUSDT, ETHUSDT]")
            out[key] = (",".join(str(i.value) for i in items), line)
        elif isinstance(value_node, yaml.ScalarNode):
            out[key] = ("" if value_node.tag.endswith(":null") else str(value_node.value), line)
        else:
            raise ValueError(f"{path}:{line}: {key} must be a single value"
                             + (" or a list" if key in ("symbols", "intervals") else ""))
    return out


def _field_named_in(message: str) -> str | None:
    """The Settings field a validation message names (``CONVTRADE_<NAME>...``), or None."""
    names = sorted((field.name for field in dataclasses.fields(Settings)), key=len, reverse=True)
    for name in names:
        if f"CONVTRADE_{name.upper()}" in message:
            return name
    return None


def parse_regime_shift(text: str, symbols: tuple[str, ...]) -> tuple[dt.date, tuple[str, ...]] | None:
    """``"2026-01-20"`` / ``"2026-01-20,ETHUSDT"`` -> (first shifted day, symbols shifted); None when empty."""
    key = "CONVTRADE_REGIME_SHIFT"
    parts = _split(str(text))
    if not parts:
        return None
    try:
        day = dt.date.fromisoformat(parts[0])
    except ValueError:
        raise ValueError(f"{key}={text!r}: start with a day like 2026-01-20 (then optional symbols)") from None
    shifted = tuple(parts[1:]) or tuple(symbols)
    if unknown := [s for s in shifted if s not in symbols]:
        raise ValueError(f"{key}={text!r}: {', '.join(unknown)} not in CONVTRADE_SYMBOLS ({', '.join(symbols)})")
    return day, shifted


def parse_maintenance_margin(text: str) -> tuple[float, dict[str, float]]:
    """``"0.005"`` / ``"BTCUSDT=0.005,0.01"`` -> (default rate, {symbol: rate}); a clear error when malformed."""
    key = "CONVTRADE_MAINTENANCE_MARGIN"
    default, per_symbol = DEFAULT_MAINTENANCE_MARGIN_RATE, {}
    bare = 0
    for part in _split(str(text)):
        symbol, sep, raw = part.rpartition("=")
        symbol = symbol.strip()
        if sep and (problem := symbol_problem(symbol)):
            raise ValueError(f"{key}: {part!r}: {problem}")
        try:
            rate = float(raw)
        except ValueError:
            raise ValueError(f"{key}: {part!r} is not a rate or SYMBOL=rate (e.g. 0.005 or BTCUSDT=0.005)") from None
        if not (0.0 <= rate < 1.0):  # also rejects NaN
            raise ValueError(f"{key}: {part!r}: the rate must be a fraction of position value in [0, 1), "
                             f"e.g. 0.005 for 0.5 %")
        if not sep:
            bare += 1
            if bare > 1:
                raise ValueError(f"{key}={text!r}: give one default rate at most (the others as SYMBOL=rate)")
            default = rate
        elif symbol in per_symbol:
            raise ValueError(f"{key}={text!r}: {symbol} is given twice")
        else:
            per_symbol[symbol] = rate
    return default, per_symbol


def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _parse(field: dataclasses.Field, raw: str, key: str):
    default = field.default if field.default is not dataclasses.MISSING else None
    if field.name in ("symbols", "intervals"):
        return _split(raw)
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{key}={raw!r} is not a boolean (use 1/0, true/false)")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise ValueError(f"{key}={raw!r} is not a number") from None
    return raw
