"""Readers of landing files, one module per input format."""
