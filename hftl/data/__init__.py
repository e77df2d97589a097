"""Data in: sources and splits, input checks, label shapes, metrics and losses, and one module per task family (`modalities/`)."""
