-- features.labels: forward return, direction class and forward realized volatility
-- per (symbol, interval, ts, horizon). NULL where the future is not known yet.
{{ config(
    materialized='incremental',
    incremental_strategy='replace_range',
    range_lookback_bars=24,
) }}

with candles as (
    select symbol, "interval", ts, close, interval_ms
    from {{ ref('stg_candles') }}
    {% if is_incremental() %}
    -- the window's rows plus 24 bars of future for the last of them
    where {{ replace_range_predicate(24) }}
       {% if feature_window_bound('end') %}
       or (ts >= cast('{{ feature_window_bound("end") }}' as timestamp)
           and ts < cast('{{ feature_window_bound("end") }}' as timestamp) + to_milliseconds(25 * interval_ms))
       {% endif %}
    {% endif %}
),

steps as (
    select
        *,
        ln(close / lag(close) over series) as log_ret
    from candles
    window series as (partition by symbol, "interval" order by ts)
),

ahead as (
    select
        symbol, "interval", ts, close, interval_ms,
        {% for h in [1, 4, 12, 24] %}
        case when lead(ts, {{ h }}) over series = ts + to_milliseconds({{ h }} * interval_ms)
             then lead(close, {{ h }}) over series / close - 1 end as fwd_return_{{ h }},
        case when lead(ts, {{ h }}) over series = ts + to_milliseconds({{ h }} * interval_ms)
             then sqrt(sum(log_ret * log_ret) over (series rows between 1 following and {{ h }} following)) end
            as fwd_volatility_{{ h }}{{ ',' if not loop.last }}
        {% endfor %}
    from steps
    window series as (partition by symbol, "interval" order by ts)
),

horizons as (
    select unnest([1, 4, 12, 24]) as horizon
)

select
    a.symbol,
    a."interval",
    a.ts,
    cast(h.horizon as integer) as horizon,
    case h.horizon {% for h in [1, 4, 12, 24] %} when {{ h }} then a.fwd_return_{{ h }}{% endfor %} end as fwd_return,
    cast(case
        when fwd_return is null then null
        when fwd_return > {{ var('direction_threshold') }} then 1
        when fwd_return < -{{ var('direction_threshold') }} then -1
        else 0
    end as tinyint) as direction,
    case h.horizon {% for h in [1, 4, 12, 24] %} when {{ h }} then a.fwd_volatility_{{ h }}{% endfor %} end as fwd_volatility
from ahead as a
cross join horizons as h
{% if is_incremental() %}
where {{ replace_range_predicate(24, 'a."interval"', 'a.ts') }}
{% endif %}
