"""The machinery every workflow shares: feature extraction and its cache, the compiled fast path, heads, the
training loop, the transferred model and its files, metrics and statistics, progress bars."""
