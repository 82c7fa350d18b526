"""The support-inbox demo: its bundled data, its pipeline and the whole story in one call."""
