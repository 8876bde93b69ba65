"""Dagster: every encoding asset materializes over monthly partitions on a tiny synthetic warehouse; a month's
re-run rewrites only that month; month by month equals one run over the range and an in-memory build."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest

from assets.definitions import partition_range_tags
from assets.encodings import ENCODING_ASSETS, ENCODING_CHECKS, ENCODING_KEYS
from assets.market import raw_candles, raw_orderbook
from assets.partitions import first_partition_keys, market_partitions
from pipeline.encodings.build import ENCODINGS, encode_candles, encode_snapshots, load_candle_arrays, load_snapshots
from pipeline.encodings.image_files import month_path, open_images, series_dir

MONTHS = first_partition_keys(31)  # the first two monthly partitions


@pytest.fixture(scope="module")
def market(tmp_path_factory, make_synthetic_market):
    """Two monthly partitions of synthetic hourly bars and snapshots of two symbols."""
    return make_synthetic_market(tmp_path_factory.mktemp("encodings_wh"), 31, [raw_candles, raw_orderbook])


def _series(name):
    interval = "snapshot" if ENCODINGS[name].source == "orderbook" else "60"
    return [(symbol, interval) for symbol in ("BTCUSDT", "ETHUSDT")]


def _in_memory(wh, name, symbol, interval):
    """The unpartitioned build of the whole range, in memory (no file, no index)."""
    if interval == "snapshot":
        return encode_snapshots(name, *load_snapshots(wh, symbol))
    return encode_candles(name, *load_candle_arrays(wh, symbol, interval), interval)


def test_encoding_assets_over_a_partition_range_write_month_files_equal_to_a_whole_build(market):
    assert len(MONTHS) == 2
    assert {k.to_user_string() for k in ENCODING_KEYS} == {f"encodings/{n}" for n in ENCODINGS}
    assert all(a.group_names_by_key[a.key] == "encodings" and a.partitions_def == market_partitions
               for a in ENCODING_ASSETS)
    result = dg.materialize(ENCODING_ASSETS + ENCODING_CHECKS, resources=market,
                            tags=partition_range_tags(MONTHS[0], MONTHS[-1]))  # one run over both months
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == len(ENCODINGS) and all(c.passed for c in checks)
    settings = market["settings"].settings()
    wh = market["warehouse"].warehouse()
    for name, s in ENCODINGS.items():
        meta = result.asset_materializations_for_node(f"encodings__{name}")[0].metadata
        total = 0
        for symbol, interval in _series(name):
            index, images = open_images(wh, settings.artifacts_dir, name, symbol, interval)
            assert [p.name for p in images.paths] == [f"{k[:7]}.npy" for k in MONTHS]  # one file per month
            assert images.shape[1:] == s.shape and images.dtype == np.dtype(s.dtype)
            t_img, expected = _in_memory(wh, name, symbol, interval)
            assert images.shape[0] > 0 and (index["ts_ms"].to_numpy() == t_img).all()
            assert np.asarray(images).tobytes() == expected.astype(s.dtype).tobytes()
            total += images.shape[0]
        assert meta["count"].value == total and meta["months"].value == ", ".join(k[:7] for k in MONTHS)
        assert "data:image/png;base64," in meta["samples"].value
        assert str(s.shape) in meta["shape"].value


def test_a_month_rerun_rewrites_only_that_month_and_month_by_month_equals_the_range(market):
    settings = market["settings"].settings()
    wh = market["warehouse"].warehouse()
    names = ("candlestick_20", "mtf", "orderbook_heatmap")  # a chart, a 129-bar look-back, snapshots
    assets = [ENCODING_ASSETS[list(ENCODINGS).index(n)] for n in names]
    assert dg.materialize(assets, resources=market, tags=partition_range_tags(MONTHS[0], MONTHS[-1])).success
    whole = {(n, *k): (open_images(wh, settings.artifacts_dir, n, *k)[0],
                       np.asarray(open_images(wh, settings.artifacts_dir, n, *k)[1]).tobytes())
             for n in names for k in _series(n)}
    first, second = (np.datetime64(k[:7], "M") for k in MONTHS)

    def table(name):
        return wh.query(f"select * from encodings.{name}_index order by all")

    def month_rows(name, month):
        return table(name).filter(table(name)["ts"].dt.strftime("%Y-%m") == str(month))

    # zero both months' files in place (same shapes: the index still agrees), then re-run the second month only
    planted = {}
    for n in names:
        for k in _series(n):
            for m in (first, second):
                path = month_path(settings.artifacts_dir, n, *k, m)
                np.save(path, np.zeros_like(np.load(path)))
                planted[(n, *k, str(m))] = path.read_bytes()
    rows_first = {n: month_rows(n, first) for n in names}
    result = dg.materialize(assets, resources=market, partition_key=MONTHS[1])
    assert result.success
    for n in names:
        meta = result.asset_materializations_for_node(f"encodings__{n}")[0].metadata
        assert meta["months"].value == str(second) and meta["rows_replaced"].value == month_rows(n, second).height
        assert month_rows(n, first).equals(rows_first[n])  # the first month's index rows: untouched
        for k in _series(n):
            # the first month's file: still the planted bytes (not rewritten); the second: rebuilt
            assert month_path(settings.artifacts_dir, n, *k, first).read_bytes() == planted[(n, *k, str(first))]
            index, images = open_images(wh, settings.artifacts_dir, n, *k)
            assert index.equals(whole[(n, *k)][0])
            n_first = month_rows(n, first).filter(month_rows(n, first)["symbol"] == k[0]).height
            size = np.dtype(ENCODINGS[n].dtype).itemsize * int(np.prod(ENCODINGS[n].shape))
            assert np.asarray(images[n_first:]).tobytes() == whole[(n, *k)][1][n_first * size:]
    # the first month again: partition by partition now equals the one run over the range, bit for bit
    assert dg.materialize(assets, resources=market, partition_key=MONTHS[0]).success
    for n in names:
        for k in _series(n):
            index, images = open_images(wh, settings.artifacts_dir, n, *k)
            assert index.equals(whole[(n, *k)][0]) and np.asarray(images).tobytes() == whole[(n, *k)][1]
            assert sorted(p.name for p in series_dir(settings.artifacts_dir, n, *k).iterdir()) == \
                [f"{key[:7]}.npy" for key in MONTHS]  # no temporary file left


def test_check_fails_when_a_file_disagrees_with_its_index(market):
    settings = market["settings"].settings()
    k = list(ENCODINGS).index("candlestick_5")
    assert dg.materialize([ENCODING_ASSETS[k]], resources=market, partition_key=MONTHS[1]).success
    path = month_path(settings.artifacts_dir, "candlestick_5", "ETHUSDT", "60", np.datetime64(MONTHS[1][:7], "M"))
    np.save(path, np.zeros((3, 1, 32, 15), np.uint8))  # a truncated file
    result = dg.materialize([ENCODING_ASSETS[k], ENCODING_CHECKS[k]], resources=market,  # the check on its own
                            selection=dg.AssetSelection.checks(ENCODING_CHECKS[k]), raise_on_error=False)
    [check] = result.get_asset_check_evaluations()
    problems = check.metadata["problems"].value
    assert not check.passed and f"rematerialize encodings/candlestick_5 for the partition {MONTHS[1]}" in problems
    assert dg.materialize([ENCODING_ASSETS[k], ENCODING_CHECKS[k]], resources=market,
                          partition_key=MONTHS[1]).success  # that month rebuilt: passes


def test_the_daily_refresh_rebuilds_the_encodings_of_its_month_before_the_nightly_retrain():
    from assets.definitions import defs

    daily = defs.resolve_job_def("daily_refresh")
    nightly = defs.resolve_job_def("nightly_retrain")
    assert daily.partitions_def == market_partitions
    assert set(ENCODING_KEYS) <= daily.asset_layer.selected_asset_keys
    assert not set(ENCODING_KEYS) & nightly.asset_layer.selected_asset_keys
    # the image models the nightly job retrains read the encodings the daily job refreshed
    graph = defs.resolve_asset_graph()
    image_models = [k for k in nightly.asset_layer.selected_asset_keys
                    if any(p in ENCODING_KEYS for p in graph.get(k).parent_keys)]
    assert image_models
