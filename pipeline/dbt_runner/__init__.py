"""Running the dbt_features project from plain Python: the invocation (``invoke``) and the fast-exit launcher."""
