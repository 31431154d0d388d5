"""Training data: sources (captions, LLaVA conversations, text, webdataset shards, mixtures),
bad-record handling, and samplers whose order is a pure function of seed and position."""
