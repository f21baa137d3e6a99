"""One-off tools outside the model package (opt-in; nothing in xmod_lab imports them)."""
