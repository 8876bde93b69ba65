-- Typed, deduplicated candles per (symbol, interval), with the bar length and a gap flag.
with ranked as (
    select
        cast(symbol as varchar) as symbol,
        cast("interval" as varchar) as "interval",
        cast(ts as timestamp) as ts,
        cast(open as double) as open,
        cast(high as double) as high,
        cast(low as double) as low,
        cast(close as double) as close,
        cast(volume as double) as volume,
        cast(turnover as double) as turnover,
        source,
        row_number() over (partition by symbol, "interval", ts order by ingested_at desc) as copy_no
    from {{ source('raw', 'candles') }}
)
select
    symbol,
    "interval",
    ts,
    open, high, low, close, volume, turnover, source,
    {{ interval_ms('"interval"') }} as interval_ms,
    coalesce(
        ts - lag(ts) over (partition by symbol, "interval" order by ts)
            > to_milliseconds({{ interval_ms('"interval"') }}),
        false
    ) as is_after_gap
from ranked
where copy_no = 1
