"""Device core: the zram model (slots, accounting, control-file parsing)."""
