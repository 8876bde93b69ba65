"""The drift tests' planted warehouse (``tests.monitoring.planted``, no training) at a small, fixed size.

Two symbols, 1600 hourly bars of i.i.d. standard-normal features. The live models
(``tcn``, ``wavenet``, fold 1) were trained on bars 0..799. ``drift_symbols``
get every feature shifted by +1.5 on the newest 720 bars (the current window), the
others re-draw reference rows there; ``decay`` names
(symbol, architecture) pairs whose predictions are all wrong (the others
are right on 60 % of the bars, their walk-forward accuracy).
"""

from __future__ import annotations

import datetime as dt

from pipeline.config import Settings
from tests.monitoring.planted import plant_drift_warehouse
from pipeline.warehouse import Warehouse

SYMBOLS = ("AAAUSDT", "BBBUSDT")
ARCHS = ("tcn", "wavenet")
BARS = 1600
START = dt.datetime(2025, 1, 1)


def ts_of(i: int) -> dt.datetime:
    return START + dt.timedelta(hours=i)


def plant(path, drift_symbols=(), decay=(), seed=0, bars=BARS) -> tuple[Warehouse, Settings]:
    # fold 0 trains on bars 0..599, fold 1 (the live one) on 0..799; one embargoed bar before each test span
    wh = plant_drift_warehouse(path, symbols=SYMBOLS, start=START, bars=bars, architectures=ARCHS,
                               test_starts=(601, 801), drift_symbols=drift_symbols, shift=1.5, decay=decay,
                               warmup_bars=10, seed=seed)
    # every model input over the planted 720-bar current window (the defaults watch three features over 336 bars)
    return wh, Settings(data_dir=path.parent, symbols=SYMBOLS, drift_features="", drift_recent_bars=720)
