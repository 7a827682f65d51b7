"""The sans-IO core of rtserver: frames, codecs, event catalog, rooms, cursors, close codes.

Nothing in this package performs I/O or imports trio (a test enforces it): it turns bytes
into typed messages and back, validates them, and knows the wire contract of docs/protocol.md.
"""
