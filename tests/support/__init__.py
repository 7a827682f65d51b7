"""What the suites share: servers started for real (Redis, PostgreSQL, nodes, Chromium),
clients, stand-ins and models. Test modules and conftests import from here; no test
module imports another (``tests/test_layers.py`` keeps it so)."""
