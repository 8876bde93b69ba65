"""Dagster: every encoding asset materializes on a tiny synthetic warehouse; a rerun replaces its rows."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from assets.encodings import ENCODING_ASSETS, ENCODING_CHECKS, ENCODING_KEYS
from assets.market import raw_candles, raw_orderbook
from pipeline.encodings.build import ENCODINGS, encode_candles, load_candles
from pipeline.encodings.store import open_images


@pytest.fixture(scope="module")
def market(tmp_path_factory, make_synthetic_market):
    """At least six synthetic days (the first monthly partition: hourly bars and snapshots) of two symbols."""
    return make_synthetic_market(tmp_path_factory.mktemp("encodings_wh"), 6, [raw_candles, raw_orderbook])


def test_every_encoding_asset_writes_images_and_index(market):
    assert {k.to_user_string() for k in ENCODING_KEYS} == {f"encodings/{n}" for n in ENCODINGS}
    assert all(a.group_names_by_key[a.key] == "encodings" for a in ENCODING_ASSETS)
    result = dg.materialize(ENCODING_ASSETS + ENCODING_CHECKS, resources=market)
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(ENCODINGS) and all(c.passed for c in checks)
    settings = market["settings"].settings()
    wh = market["warehouse"].warehouse()
    bars = wh.query("select count(*) as n from raw.candles where symbol = 'BTCUSDT' and interval = '60'")["n"][0]
    assert bars >= 144 and bars % 24 == 0
    for name, s in ENCODINGS.items():
        meta = result.asset_materializations_for_node(f"encodings__{name}")[0].metadata
        interval = "snapshot" if s.source == "orderbook" else "60"
        total = 0
        for symbol in ("BTCUSDT", "ETHUSDT"):
            index, images = open_images(wh, settings.artifacts_dir, name, symbol, interval)
            assert images.shape[1:] == s.shape and images.dtype == np.dtype(s.dtype)
            assert images.shape[0] == bars - s.history + 1  # every gap-free window of the bars
            total += images.shape[0]
            if s.source == "candles" and symbol == "ETHUSDT":
                ts, ohlcv = load_candles(wh, symbol, "60")
                t_img, expected = encode_candles(name, ts, ohlcv, "60")
                assert (index["ts_ms"].to_numpy() == t_img).all()
                np.testing.assert_array_equal(np.asarray(images), expected.astype(s.dtype))
        assert meta["count"].value == total
        assert "data:image/png;base64," in meta["samples"].value
        assert str(s.shape) in meta["shape"].value
    # a rerun replaces exactly the same rows
    before = wh.query("select * from encodings.candlestick_20_index order by all")
    again = dg.materialize([ENCODING_ASSETS[list(ENCODINGS).index("candlestick_20")]], resources=market)
    assert again.success
    assert wh.query("select * from encodings.candlestick_20_index order by all").equals(before)


def test_check_fails_when_a_file_disagrees_with_its_index(market):
    settings = market["settings"].settings()
    k = list(ENCODINGS).index("candlestick_5")
    assert dg.materialize([ENCODING_ASSETS[k]], resources=market).success
    path = settings.artifacts_dir / "encodings" / "candlestick_5" / "ETHUSDT_60.npy"
    np.save(path, np.zeros((3, 1, 32, 15), np.uint8))  # a truncated file
    result = dg.materialize([ENCODING_ASSETS[k], ENCODING_CHECKS[k]], resources=market,
                            selection=dg.AssetSelection.checks(ENCODING_CHECKS[k]), raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and "rematerialize" in check.metadata["problems"].value
    assert dg.materialize([ENCODING_ASSETS[k], ENCODING_CHECKS[k]], resources=market).success  # rebuilt: passes
