{#
  Incremental strategy "replace_range": delete the target rows of the run's
  window and insert the freshly computed ones, in one transaction.

  The window is [start - range_lookback_bars bars, end), per row's interval,
  start/end from feature_window_bound (dbt vars, else the environment
  variables CONVTRADE_FEATURES_START / _END that the Dagster asset sets: env
  vars keep dbt's partial parsing valid, vars force a full reparse); with
  neither it is the whole table. A model must emit
  exactly the rows of the same window (use replace_range_predicate in SQL, or
  the same bounds in Python), so a rerun replaces exactly what it owns.
#}
{% macro feature_window_bound(name) -%}
    {{ return(var(name, '') or env_var('CONVTRADE_FEATURES_' ~ (name | upper), '')) }}
{%- endmacro %}

{% macro replace_range_predicate(lookback_bars=0, interval_column='interval', ts_column='ts') -%}
    {%- set start = feature_window_bound('start') -%}
    {%- set end = feature_window_bound('end') -%}
    {%- if start -%}
        {{ ts_column }} >= cast('{{ start }}' as timestamp) - to_milliseconds({{ lookback_bars }} * {{ interval_ms(interval_column) }})
    {%- else -%}
        true
    {%- endif %}
    and {% if end -%}
        {{ ts_column }} < cast('{{ end }}' as timestamp)
    {%- else -%}
        true
    {%- endif -%}
{%- endmacro %}

{% macro get_incremental_replace_range_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    delete from {{ target }} where {{ replace_range_predicate(config.get('range_lookback_bars', 0)) }};
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }} where {{ replace_range_predicate(config.get('range_lookback_bars', 0)) }}
{%- endmacro %}
