"""Input formats: one module per kind of landing data, each turning it into staged rows."""
