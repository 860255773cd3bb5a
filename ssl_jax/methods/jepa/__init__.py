"""Joint-embedding predictive architectures: predict representations, not pixels (I-JEPA, LeJEPA)."""
