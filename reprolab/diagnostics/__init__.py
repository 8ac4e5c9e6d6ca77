"""Diagnostics: clustering metrics, embedding checks, coherence, retrieval, merging effect, similarity."""
