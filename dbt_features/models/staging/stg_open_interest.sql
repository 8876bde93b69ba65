-- Open interest per (symbol, ts); where several intervals were fetched, the finest one wins.
select symbol, cast(ts as timestamp) as ts, cast(open_interest as double) as open_interest
from {{ source('raw', 'open_interest') }}
qualify row_number() over (
    partition by symbol, ts order by {{ interval_ms('"interval"') }}, ingested_at desc
) = 1
