"""Clients: a Python client library (sync + asyncio) and the chat-client terminal."""
