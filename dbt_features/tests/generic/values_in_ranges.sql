{#
  Fails with one row per (row, column) whose value lies outside its [min, max]
  (NULLs pass). `ranges` maps column -> [min, max]; one test node instead of one
  per column keeps a daily run's test phase short.
#}
{% test values_in_ranges(model, ranges, keys=['symbol', '"interval"', 'ts']) %}
{% for column, bounds in ranges.items() %}
select {{ keys | join(', ') }}, '{{ column }}' as column_name, cast({{ column }} as double) as value
from {{ model }}
where {{ column }} < {{ bounds[0] }} or {{ column }} > {{ bounds[1] }}
{{ 'union all' if not loop.last }}
{% endfor %}
{% endtest %}
