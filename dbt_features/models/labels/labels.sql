-- features.labels: forward return, direction class and forward realized volatility
-- per (symbol, interval, ts, horizon). NULL where the future is not known yet.
-- Horizons and the direction threshold are dbt vars (dbt_project.yml): the one label definition.
{%- set horizons = var('label_horizons') %}
{%- set longest = horizons | max %}
{{ config(
    materialized='incremental',
    incremental_strategy='replace_range',
    range_lookback_bars=var('label_horizons') | max,
) }}

with candles as (
    select symbol, "interval", ts, close, interval_ms
    from {{ ref('stg_candles') }}
    {% if is_incremental() %}
    -- the window's rows plus the longest horizon of future for the last of them
    where {{ replace_range_predicate(longest) }}
       {% if feature_window_bound('end') %}
       or (ts >= cast('{{ feature_window_bound("end") }}' as timestamp)
           and ts < cast('{{ feature_window_bound("end") }}' as timestamp) + to_milliseconds({{ longest + 1 }} * interval_ms))
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
        -- fwd_volatility: the squares summed in a fixed order (bar 1 + bar 2 + ...), never a window
        -- sum: DuckDB combines a windowed sum's partial sums in an order that depends on the rows it
        -- read, so an incremental run and a full build differed in the last bit
        {% for h in horizons %}
        case when lead(ts, {{ h }}) over series = ts + to_milliseconds({{ h }} * interval_ms)
             then lead(close, {{ h }}) over series / close - 1 end as fwd_return_{{ h }},
        case when lead(ts, {{ h }}) over series = ts + to_milliseconds({{ h }} * interval_ms)
             then sqrt({% for k in range(1, h + 1) %}{{ ' + ' if not loop.first }}lead(log_ret * log_ret, {{ k }}) over series{% endfor %}) end
            as fwd_volatility_{{ h }}{{ ',' if not loop.last }}
        {% endfor %}
    from steps
    window series as (partition by symbol, "interval" order by ts)
),

horizons as (
    select unnest([{{ horizons | join(', ') }}]) as horizon
)

select
    a.symbol,
    a."interval",
    a.ts,
    cast(h.horizon as integer) as horizon,
    case h.horizon {% for h in horizons %} when {{ h }} then a.fwd_return_{{ h }}{% endfor %} end as fwd_return,
    cast(case
        when fwd_return is null then null
        when fwd_return > {{ var('direction_threshold') }} then 1
        when fwd_return < -{{ var('direction_threshold') }} then -1
        else 0
    end as tinyint) as direction,
    case h.horizon {% for h in horizons %} when {{ h }} then a.fwd_volatility_{{ h }}{% endfor %} end as fwd_volatility
from ahead as a
cross join horizons as h
{% if is_incremental() %}
where {{ replace_range_predicate(longest, 'a."interval"', 'a.ts') }}
{% endif %}
