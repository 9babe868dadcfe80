"""The bus between workers and the hub, owned here and nowhere else.

wire.py is the frame format (topics, headers, packing, gap counting);
messages.py is one typed message per request and control item; link.py is
the socket a worker, the supervisor or a benchmark uses to talk to a hub.
This file imports nothing, so importing one part runs no other.
"""
