"""The ASGI layer: the only part of the proxy that knows about starlette."""
