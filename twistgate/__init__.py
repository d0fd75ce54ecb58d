"""
twistgate: an API gateway on Twisted that runs Proxy-Wasm filters.
"""

__version__ = "0.1.0"
