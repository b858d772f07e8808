"""Data layer: raw sources -> canonical dataset -> validation."""
