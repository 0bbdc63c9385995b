"""The worker runtime: what runs inside a worker of any engine (a local child, a Ray actor).

``codec`` turns calls and results into bytes, ``outcome`` packs answers and exceptions,
``runtime`` runs and cancels tasks, ``chunks`` runs the chunks of ``map``. Nothing here imports
the front or an engine, and importing it stays cheap: a child process pays for it at start-up.
"""
