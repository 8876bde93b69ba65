"""Candle features and labels: the plain-Python core behind dbt_features/.

``candle_features.compute_candle_features`` computes every indicator of
``features.candle_features`` (the dbt Python model is a thin wrapper around
it); ``columns`` names the model-input columns; ``labels`` reads the one label
definition (horizons, direction threshold, class encoding) and ``features.labels``.
"""
