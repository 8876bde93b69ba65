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

{#
  With config replace_source_keys (features.candle_features), every row the
  model returned replaces the target row of the same (symbol, interval, ts)
  too, inside or before the window: under the fill gap policy a candle
  arriving at `start` fills a gap that began before it.
#}
{% macro get_incremental_replace_range_sql(arg_dict) -%}
    {%- set target = arg_dict['target_relation'] -%}
    {%- set source = arg_dict['temp_relation'] -%}
    {%- set columns = get_quoted_csv(arg_dict['dest_columns'] | map(attribute='name')) -%}
    {%- set predicate = replace_range_predicate(config.get('range_lookback_bars', 0)) -%}
    {%- if config.get('replace_source_keys', false) %}
    delete from {{ target }} where {{ predicate }}
        or exists (select 1 from {{ source }} as s where s.symbol = {{ target }}.symbol
                   and s."interval" = {{ target }}."interval" and s.ts = {{ target }}.ts);
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }}
    {%- else %}
    delete from {{ target }} where {{ predicate }};
    insert into {{ target }} ({{ columns }})
    select {{ columns }} from {{ source }} where {{ predicate }}
    {%- endif %}
{%- endmacro %}

{#
  Post-hook of the Python incremental model: drop its temporary relations.
  dbt-duckdb writes a Python model's incremental rows into a real table
  `<model>__dbt_tmp<timestamp>` (in the default schema) but treats it as a
  temporary one and never drops it, so every daily run would leave a table.
  Drops every such table of this model (leftovers of older runs too).
#}
{% macro drop_python_temp_relations() -%}
    {%- if execute -%}
        {%- set found = run_query(
            "select schema_name, table_name from duckdb_tables() where database_name = current_database() "
            ~ "and starts_with(table_name, '" ~ this.identifier ~ "__dbt_tmp')") -%}
        {%- for row in found -%}
            drop table if exists "{{ row[0] }}"."{{ row[1] }}";
        {% endfor -%}
    {%- endif -%}
{%- endmacro %}
