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
"""

from __future__ import annotations

import dataclasses

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
