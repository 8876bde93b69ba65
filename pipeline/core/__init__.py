"""The floor: shared leaf primitives (time grid, column lists, windows and splits, costs, position rules,
the settings vocabularies). Every package may import it; it imports nothing else of ``pipeline``."""
