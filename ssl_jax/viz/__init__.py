"""Visualisations of trained encoders (attention maps, reconstructions)."""
