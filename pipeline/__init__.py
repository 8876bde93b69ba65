"""Convolutional trading models on crypto markets, as plain Python (no Dagster outside definitions, resources, automation)."""
