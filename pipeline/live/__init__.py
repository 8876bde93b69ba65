"""Live use of the trained models: signals and the paper ledger (no real orders)."""
