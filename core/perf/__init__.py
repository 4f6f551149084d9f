"""The performance layer: every trick that makes the stack faster than stock Django, DRF and gunicorn.

Each module names its switch (an environment setting read in aicp/settings.py) and its measured gain in
its docstring; docs/ARCHITECTURE.md lists them together. The domain apps call plain services; what is
here either replaces a stock component by settings (the SQLite backend, the web worker) or is a helper
the hot path calls (raw statements, group commit, recent rows).
"""
