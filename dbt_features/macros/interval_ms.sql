{# Length of a Bybit interval code in milliseconds (mirrors pipeline.config.INTERVAL_MS); NULL if unknown. #}
{% macro interval_ms(column) -%}
    case {{ column }}
        when '1' then 60000 when '3' then 180000 when '5' then 300000 when '15' then 900000
        when '30' then 1800000 when '60' then 3600000 when '120' then 7200000 when '240' then 14400000
        when '360' then 21600000 when '720' then 43200000 when 'D' then 86400000 when 'W' then 604800000
    end
{%- endmacro %}
