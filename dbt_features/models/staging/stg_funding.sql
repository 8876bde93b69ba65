-- Funding rate per settlement, one row per (symbol, ts).
select symbol, cast(ts as timestamp) as ts, cast(funding_rate as double) as funding_rate
from {{ source('raw', 'funding') }}
qualify row_number() over (partition by symbol, ts order by ingested_at desc) = 1
