{#
  Materialization "stable_view" (the staging models): a view that is replaced
  only when its compiled SQL changed. The SQL's md5 is kept as the view's
  comment; a run whose SQL has the same fingerprint leaves the view alone, so
  a daily partition run does not rewrite the catalog four times (each
  replacement is its own committed transaction). --full-refresh replaces it.
#}
{% materialization stable_view, adapter='duckdb' %}
  {%- set target_relation = this.incorporate(type='view') -%}
  {%- set fingerprint = 'dbt stable_view md5 ' ~ local_md5(sql) -%}
  {%- set existing_relation = load_cached_relation(this) -%}
  {%- set current = none -%}
  {%- if existing_relation is not none and existing_relation.is_view and not should_full_refresh() -%}
    {%- set found = run_query(
        "select comment from duckdb_views() where database_name = '" ~ this.database
        ~ "' and schema_name = '" ~ this.schema ~ "' and view_name = '" ~ this.identifier ~ "'") -%}
    {%- if found | length > 0 -%}
      {%- set current = found[0][0] -%}
    {%- endif -%}
  {%- endif -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}
  {% if current == fingerprint %}
    {% call statement('main') -%}
      select 1 as unchanged
    {%- endcall %}
  {% else %}
    {% if existing_relation is not none and not existing_relation.is_view %}
      {{ adapter.drop_relation(existing_relation) }}
    {% endif %}
    {% call statement('main') -%}
      create or replace view {{ target_relation }} as (
        {{ sql }}
      );
      comment on view {{ target_relation }} is '{{ fingerprint }}'
    {%- endcall %}
    {% do persist_docs(target_relation, model) %}
  {% endif %}
  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}
  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}
