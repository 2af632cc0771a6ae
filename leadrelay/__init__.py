"""The `leadrelay` command: run the embedded system, serve one service, migrate, demo.

This package is the composition root. It starts services as separate processes and knows them
only by name, module path and port; it holds no business logic.
"""
