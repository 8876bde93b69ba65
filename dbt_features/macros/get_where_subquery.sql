{#
  The relation a data test reads (overrides dbt's get_where_subquery).

  A test whose config has meta.partition_window_lookback_bars checks, on a
  run with a window (see feature_window_bound), only the rows that run can
  have written: [start - lookback bars, end) per row's interval. Rows outside
  were checked by the run that wrote them; a run without a window (a full
  build) checks every row. The bounds are read only at execution
  (`execute`), so parsing never records the window variables and a new
  window keeps dbt's partial parsing valid. A `where` config still applies.
#}
{% macro get_where_subquery(relation) -%}
    {%- set filters = [] -%}
    {%- set where = config.get('where', '') -%}
    {%- if where -%}
        {%- do filters.append('(' ~ where ~ ')') -%}
    {%- endif -%}
    {%- set lookback = (config.get('meta') or {}).get('partition_window_lookback_bars') -%}
    {%- if execute and lookback is not none
          and (feature_window_bound('start') or feature_window_bound('end')) -%}
        {%- do filters.append('(' ~ replace_range_predicate(lookback) ~ ')') -%}
    {%- endif -%}
    {%- if filters -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ filters | join(' and ') }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
