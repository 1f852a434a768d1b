"""pypi-proxy: a caching pull-through proxy and offline mirror for the Python package index."""

from __future__ import annotations

__version__ = "0.1.0"
