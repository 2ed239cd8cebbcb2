"""Tables, average ranks and figures built from results on disk."""
