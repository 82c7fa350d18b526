"""Is live traffic still handled well: drift and shadow agreement, live and offline."""
