"""Models the research lines make claims about: mixtures/ (JAX) and lvm/ (torch)."""
