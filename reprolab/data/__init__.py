"""Data loaders and fixture builders (digits, MNIST from a local path, text corpus, sequences, locales)."""
