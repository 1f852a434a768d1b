"""The serial-driven mirror (issue 3): keeps a full or selected mirror in the proxy's cache."""
