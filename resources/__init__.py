"""Package data: demo datasets, icons and style sheets (no code)."""
