"""Joint-embedding predictive architectures: I-JEPA, LeJEPA."""
