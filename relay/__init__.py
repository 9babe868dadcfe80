"""The chat-relay server: supervisor, hub, workers."""

__version__ = "0.1.0"
