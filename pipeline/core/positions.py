"""Rules that turn class probabilities into target positions (signed fractions of equity).

Direction: long when ``p_up > threshold`` and ``p_up > p_down``, short when
``p_down > threshold`` and ``p_down > p_up``, flat otherwise; optionally also
flat when a model's confidence output is below ``min_confidence``.

Sizing:

- ``fixed``: ``fraction`` of equity;
- ``confidence``: ``fraction × p`` where ``p`` is the winning class's probability;
- ``kelly``: the Kelly fraction of a bet won with probability ``p`` (the
  winning class) and lost with probability ``q`` (the opposite class; a flat
  outcome neither wins nor loses) at payoff ratio ``b``: ``f = p - q / b``;
  halved with ``half_kelly``, capped at ``kelly_cap`` (25 %), flat when ``f <= 0``.

The engine trades whenever the target changes, so confidence and Kelly sizing
rebalance (and pay costs) on every bar whose probability moves; round the
targets (``np.round(t, 2)``) to trade less often.

The cost-aware edge rule (:class:`EdgeRule`, :func:`fit_edge_rule`,
:func:`edge_targets`) is the one rule that turns class probabilities into
positions for the logistic-regression baseline and for the trained models:

- the expected move of a bar is ``sum_k p_k * r_k``, where ``r_k`` is the mean
  forward return of label class ``k`` (0 down, 1 flat, 2 up) on the fit rows;
- enter long when the expected move exceeds ``round_trip_cost + margin``,
  short when it is below ``-(round_trip_cost + margin)`` (if ``allow_short``);
- hold through bars where the expected move does not change sides (a position
  is kept while its sign agrees with the position or is zero); when it
  changes sides the position is closed, and reversed if the opposite side
  clears the entry level on that bar;
- a bar without a prediction (an all-NaN probability row) is flat.

:func:`fit_edge_rule` takes the class returns and chooses the margin on the
rows it is given (a fold's training or validation rows), never the test block.
"""

from __future__ import annotations

import dataclasses
import math

import numba as nb
import numpy as np

SIZINGS = ("fixed", "confidence", "kelly")
SIZING_CODES = {name: code for code, name in enumerate(SIZINGS)}


@dataclasses.dataclass(frozen=True)
class SignalRule:
    threshold: float = 0.5
    sizing: str = "fixed"
    fraction: float = 1.0
    min_confidence: float = 0.0
    kelly_payoff: float = 1.0
    half_kelly: bool = True
    kelly_cap: float = 0.25
    allow_short: bool = True

    def __post_init__(self) -> None:
        if self.sizing not in SIZINGS:
            raise ValueError(f"sizing={self.sizing!r}: use one of {', '.join(SIZINGS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold={self.threshold!r}: must be in [0, 1)")
        if not 0.0 < self.fraction <= 10.0:
            raise ValueError(f"fraction={self.fraction!r}: must be in (0, 10]")
        if self.kelly_payoff <= 0:
            raise ValueError(f"kelly_payoff={self.kelly_payoff!r}: must be > 0")
        if not 0.0 < self.kelly_cap <= 1.0:
            raise ValueError(f"kelly_cap={self.kelly_cap!r}: must be in (0, 1]")


@nb.njit(cache=True, inline="always", error_model="numpy")
def target_at(pu, pd, conf, threshold, sizing_code, fraction, min_confidence, kelly_payoff, kelly_mult,
              kelly_cap, allow_short):
    """Target position of one bar (the rule of :func:`target_positions`, inlined into the grid runner)."""
    side = 0.0
    p = 0.0
    q = 0.0
    if pu > threshold and pu > pd:
        side = 1.0
        p = pu
        q = pd
    elif allow_short and pd > threshold and pd > pu:
        side = -1.0
        p = pd
        q = pu
    if side != 0.0 and conf < min_confidence:
        side = 0.0
    if side == 0.0:
        return 0.0
    if sizing_code == 0:
        size = fraction
    elif sizing_code == 1:
        size = fraction * p
    else:
        f = (p - q / kelly_payoff) * kelly_mult
        if f > kelly_cap:
            f = kelly_cap
        size = f if f > 0.0 else 0.0
    return side * size


@nb.njit(cache=True, error_model="numpy")
def targets_from_probabilities(p_down, p_up, confidence, threshold, sizing_code, fraction,
                               min_confidence, kelly_payoff, kelly_mult, kelly_cap, allow_short, out):
    """Numeric core of :func:`target_positions`."""
    n = p_up.shape[0]
    for i in range(n):
        out[i] = target_at(p_up[i], p_down[i], confidence[i], threshold, sizing_code, fraction, min_confidence,
                           kelly_payoff, kelly_mult, kelly_cap, allow_short)
    return out


def _check_probability(name: str, values: np.ndarray, n: int) -> np.ndarray:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} has shape {arr.shape}; expected ({n},) like p_up")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}[{i}]={arr[i].item()!r} is not a probability in [0, 1] (NaN prediction?); "
                         f"drop or fill the bars without a prediction before the backtest")
    return arr


def target_positions(p_down, p_up, rule: SignalRule = SignalRule(), confidence=None) -> np.ndarray:
    """Target position per bar from class probabilities; a NaN or out-of-range input is an error."""
    p_up_arr = np.asarray(p_up)
    n = p_up_arr.shape[0] if p_up_arr.ndim == 1 else -1
    if n < 0:
        raise ValueError(f"p_up must be one-dimensional, has shape {p_up_arr.shape}")
    p_up_arr = _check_probability("p_up", p_up_arr, n)
    p_down_arr = _check_probability("p_down", p_down, n)
    if confidence is None:
        conf = np.maximum(p_up_arr, p_down_arr)
    else:
        conf = _check_probability("confidence", confidence, n)
    out = np.empty(n, dtype=np.float64)
    return targets_from_probabilities(
        p_down_arr, p_up_arr, conf, float(rule.threshold), SIZING_CODES[rule.sizing], float(rule.fraction),
        float(rule.min_confidence), float(rule.kelly_payoff), 0.5 if rule.half_kelly else 1.0,
        float(rule.kelly_cap), bool(rule.allow_short), out,
    )


# ---- the cost-aware edge rule ---------------------------------------------------------------------

DEFAULT_MARGINS: tuple[float, ...] = (0.0, 0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008)


@dataclasses.dataclass(frozen=True)
class EdgeRule:
    """Trade when the expected move beats the round trip: see the module docstring.

    ``class_returns`` are the mean forward returns of classes (down, flat, up);
    ``round_trip_cost`` is ``2 * (fee + slippage)`` as a fraction of traded
    value; ``margin`` is the extra edge demanded on top (``math.inf``: never
    trade, what :func:`fit_edge_rule` returns when no margin earns on its rows).
    """

    class_returns: tuple[float, float, float]
    round_trip_cost: float
    margin: float
    fraction: float = 1.0
    allow_short: bool = True

    def __post_init__(self) -> None:
        if len(self.class_returns) != 3 or not all(math.isfinite(float(r)) for r in self.class_returns):
            raise ValueError(f"class_returns={self.class_returns!r}: need three finite returns (down, flat, up)")
        if not (math.isfinite(self.round_trip_cost) and self.round_trip_cost >= 0):
            raise ValueError(f"round_trip_cost={self.round_trip_cost!r}: must be a finite number >= 0")
        if math.isnan(self.margin) or self.margin < 0:
            raise ValueError(f"margin={self.margin!r}: must be >= 0 (math.inf: never trade)")
        if not 0.0 < self.fraction <= 10.0:
            raise ValueError(f"fraction={self.fraction!r}: must be in (0, 10]")

    @property
    def entry_level(self) -> float:
        """The expected move a bar needs to open a position."""
        return self.round_trip_cost + self.margin

    def as_config(self) -> dict:
        """JSON-safe description (an infinite margin is written as None: never trades)."""
        return {
            "class_returns": [float(r) for r in self.class_returns],
            "round_trip_cost": float(self.round_trip_cost),
            "margin": float(self.margin) if math.isfinite(self.margin) else None,
            "fraction": float(self.fraction),
            "allow_short": bool(self.allow_short),
        }


def _check_proba_matrix(proba) -> np.ndarray:
    """(n, 3) float64 probabilities; whole NaN rows (no prediction) pass, anything else non-finite fails."""
    p = np.ascontiguousarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"proba has shape {p.shape}; expected (n, 3) columns p_down, p_flat, p_up")
    missing = np.isnan(p).all(axis=1)
    known = p[~missing]
    bad = ~np.isfinite(known) | (known < 0) | (known > 1)
    if bad.any():
        row = int(np.flatnonzero(~missing)[np.flatnonzero(bad.any(axis=1))[0]])
        raise ValueError(f"proba row {row} = {p[row].tolist()} is not three probabilities in [0, 1] "
                         "(a row without a prediction must be all NaN)")
    return p


def expected_move(proba, class_returns) -> np.ndarray:
    """Expected forward return per bar: ``proba @ class_returns`` (NaN where the row has no prediction)."""
    p = _check_proba_matrix(proba)
    r = np.asarray(class_returns, dtype=np.float64)
    if r.shape != (3,) or not np.all(np.isfinite(r)):
        raise ValueError(f"class_returns={class_returns!r}: need three finite returns (down, flat, up)")
    return p @ r


@nb.njit(cache=True, error_model="numpy")
def _edge_positions(move, entry_level, fraction, allow_short, out):
    """Positions from expected moves: enter beyond +-entry_level, hold until the move changes sides."""
    side = 0.0
    for i in range(move.shape[0]):
        m = move[i]
        if np.isnan(m):
            side = 0.0
        else:
            if (side > 0.0 and m < 0.0) or (side < 0.0 and m > 0.0):
                side = 0.0
            if side == 0.0:
                if m > entry_level:
                    side = 1.0
                elif allow_short and m < -entry_level:
                    side = -1.0
        out[i] = side * fraction
    return out


def edge_targets(proba, rule: EdgeRule) -> np.ndarray:
    """Target position per bar (``+fraction``, ``-fraction`` or 0) under ``rule``; see the module docstring."""
    move = expected_move(proba, rule.class_returns)
    out = np.empty(move.shape[0], dtype=np.float64)
    level = rule.entry_level if math.isfinite(rule.entry_level) else np.inf
    return _edge_positions(move, float(level), float(rule.fraction), bool(rule.allow_short), out)


def class_mean_returns(fwd_return, label_class) -> tuple[float, float, float]:
    """Mean forward return of each label class (0 down, 1 flat, 2 up); 0.0 for a class with no rows."""
    fwd = np.asarray(fwd_return, dtype=np.float64)
    cls = np.asarray(label_class, dtype=np.int64)
    if fwd.shape != cls.shape or fwd.ndim != 1:
        raise ValueError(f"fwd_return has shape {fwd.shape} but label_class has {cls.shape}: need two equal 1-D arrays")
    known = (cls >= 0) & np.isfinite(fwd)
    out = []
    for k in range(3):
        rows = known & (cls == k)
        out.append(float(fwd[rows].mean()) if rows.any() else 0.0)
    return out[0], out[1], out[2]


def edge_net_pnl(targets, fwd_return, round_trip_cost: float, horizon: int = 1) -> float:
    """Net PnL (fractions of equity, summed) of holding ``targets`` over rows with ``fwd_return``.

    Bar ``t``'s position earns ``fwd_return[t] / horizon`` (a ``horizon``-bar
    return spread over its bars) and every change of position pays half the
    round trip per unit traded. Rows with an unknown return earn nothing.
    """
    t = np.asarray(targets, dtype=np.float64)
    fwd = np.nan_to_num(np.asarray(fwd_return, dtype=np.float64), nan=0.0)
    traded = np.abs(np.diff(np.concatenate(([0.0], t)))).sum()
    return float((t * fwd).sum() / horizon - 0.5 * round_trip_cost * traded)


def fit_edge_rule(proba_fit, fwd_return_fit, label_class_fit, round_trip_cost: float,
                  margins: tuple[float, ...] = DEFAULT_MARGINS, fraction: float = 1.0, allow_short: bool = True,
                  *, horizon: int = 1) -> EdgeRule:
    """The edge rule fitted on training / validation rows only (never on the rows it will trade).

    ``class_returns`` are the mean ``fwd_return_fit`` of each class of
    ``label_class_fit`` (rows with class -1 or a NaN return are ignored); the
    margin is the one of ``margins`` with the highest :func:`edge_net_pnl` on
    these rows (ties: the larger margin, fewer trades). When no margin earns a
    positive net PnL the rule never trades (``margin=math.inf``).
    """
    p = _check_proba_matrix(proba_fit)
    fwd = np.asarray(fwd_return_fit, dtype=np.float64)
    cls = np.asarray(label_class_fit, dtype=np.int64)
    if fwd.shape != (p.shape[0],) or cls.shape != (p.shape[0],):
        raise ValueError(f"proba_fit has {p.shape[0]} rows but fwd_return_fit has shape {fwd.shape} and "
                         f"label_class_fit {cls.shape}")
    if not margins:
        raise ValueError("margins is empty: give at least one margin to choose from")
    if int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon={horizon!r}: must be a positive number of bars")
    class_returns = class_mean_returns(fwd, cls)
    best_margin, best_pnl = math.inf, 0.0
    for margin in sorted((float(m) for m in margins), reverse=True):
        rule = EdgeRule(class_returns, float(round_trip_cost), margin, fraction, allow_short)
        pnl = edge_net_pnl(edge_targets(p, rule), fwd, rule.round_trip_cost, int(horizon))
        if pnl > best_pnl:
            best_margin, best_pnl = margin, pnl
    return EdgeRule(class_returns, float(round_trip_cost), best_margin, fraction, allow_short)


def round_trip_cost_of(costs) -> float:
    """``2 * (taker fee + slippage)`` of a :class:`~pipeline.core.costs.CostModel`, as a fraction."""
    return 2.0 * (float(costs.taker_fee) + float(costs.slippage))
