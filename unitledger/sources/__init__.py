"""Landing files in, staged and quarantined rows out: one module per input format, the landing-file
and staging machinery they share, and which days a change in the landing folders affects."""
