"""Mergers: components/ (merge mixture components into classes) and weights/ (weight-space model merging)."""
