"""The backend layer: what the actors are built on, and nothing that builds on them.

Layers, each importing only those before it (``tests/test_layers.py`` keeps them):

1. ``protocol/`` — the pure core: frames, codecs, catalog, rooms, cursors, limits.
2. ``rtserver.backends`` — this package: configuration, metrics, error boundaries,
   authentication, sockets, the Trio-native Redis client, the bus (memory and Redis
   Streams) and the stores (presence, schedule records, push devices and live users).
3. ``actors/`` — one Trio task per connection, room and schedule, fed by bounded channels.
4. the shell, the rest of ``rtserver/`` — the listener, the HTTP app, commands, node
   assembly, the CLI and the processes beside the nodes (outbox relay, webhooks, push).
"""
