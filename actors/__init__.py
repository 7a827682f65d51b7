"""Actors: Trio tasks that own their state and talk through bounded memory channels."""
