"""Which rows of a series may end an input window: no warm-up row, no missing bar of the candle grid inside
the window, and (for training) a known label whose horizon crosses no gap. Sequence windows, image encodings
and the live signals all cut their windows with these rules."""

from __future__ import annotations

import numpy as np


def valid_window_ends(ts_ms: np.ndarray, is_warmup: np.ndarray, label_known: np.ndarray, step_ms: int,
                      window: int, horizon: int, features: np.ndarray | None = None
                      ) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of valid window ends of one series and the count dropped per reason (vectorised)."""
    n = ts_ms.shape[0]
    ok_step = np.zeros(n, dtype=bool)  # ok_step[i]: row i follows row i-1 by exactly one interval
    ok_step[1:] = np.diff(ts_ms) == step_ms
    bad_row = is_warmup.copy()
    if features is not None:
        bad_row |= ~np.isfinite(features).all(axis=1)  # a NULL input outside warm-up counts as warm-up
    # rolling counts over the last `window` rows / steps, via cumulative sums
    c_bad = np.concatenate([[0], np.cumsum(bad_row)])
    c_gap = np.concatenate([[0], np.cumsum(~ok_step)])
    ends = np.arange(n)
    start = ends - window + 1
    full = start >= 0
    s = np.clip(start, 0, None)
    warm = ~full | ((c_bad[ends + 1] - c_bad[s]) > 0)
    # gaps strictly inside the window: steps s+1..e must all be ok
    gap_in = (c_gap[ends + 1] - c_gap[np.minimum(s + 1, n)]) > 0
    # the label's horizon: rows e+1..e+h present and one interval apart
    fut = np.zeros(n, dtype=bool)
    inside = ends + horizon < n
    fut[inside] = ts_ms[ends[inside] + horizon] - ts_ms[ends[inside]] == horizon * step_ms
    label_gap = inside & ~fut  # the future of the label crosses a missing bar
    gap = ~warm & (gap_in | label_gap)
    unknown = ~warm & ~gap & ~label_known
    valid = ~warm & ~gap & ~unknown
    dropped = {"warmup": int(warm.sum()), "gap": int(gap.sum()), "unknown_label": int(unknown.sum())}
    return valid, dropped



def contiguous_window_ends(ts_ms: np.ndarray, step_ms: int, history: int) -> np.ndarray:
    """Rows ``e`` whose ``history`` rows ending at ``e`` lie one ``step_ms`` apart (no gap inside)."""
    n = ts_ms.shape[0]
    valid, _ = valid_window_ends(ts_ms, np.zeros(n, dtype=bool), np.ones(n, dtype=bool), step_ms, history, 0)
    return np.flatnonzero(valid)
