-- Order-book snapshot statistics: spread, top-of-book and 5-level depth imbalance.
with books as (
    select
        symbol,
        cast(ts as timestamp) as ts,
        bid_px[1] as bid_1, ask_px[1] as ask_1,
        bid_sz[1] as bid_sz_1, ask_sz[1] as ask_sz_1,
        list_sum(bid_sz[1:5]) as bid_depth_5,
        list_sum(ask_sz[1:5]) as ask_depth_5
    from {{ source('raw', 'orderbook') }}
    where len(bid_px) > 0 and len(ask_px) > 0
    qualify row_number() over (partition by symbol, ts order by ingested_at desc) = 1
)
select
    symbol,
    ts,
    (ask_1 - bid_1) / ((ask_1 + bid_1) / 2) * 1e4 as ob_spread_bps,
    (bid_sz_1 - ask_sz_1) / nullif(bid_sz_1 + ask_sz_1, 0) as ob_top_imbalance,
    (bid_depth_5 - ask_depth_5) / nullif(bid_depth_5 + ask_depth_5, 0) as ob_depth_imbalance_5
from books
