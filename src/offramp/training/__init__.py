"""The training API: the model search, large data, label noise, speed measurements."""
