{# Fails with each row past warm-up where one of `columns` is NULL, NaN or infinite. #}
{% test finite_after_warmup(model, columns, warmup_column='is_warmup') %}
select symbol, "interval", ts
from {{ model }}
where not {{ warmup_column }}
  and ({% for column in columns %}{{ column }} is null or not isfinite({{ column }}){{ ' or ' if not loop.last }}{% endfor %})
{% endtest %}
