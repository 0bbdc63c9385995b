"""Micro-benchmarks of the cores of proposed library changes, measured in isolation.

``python -m benchmarks.micro.recv_bytes``: receiving a large ``bytes`` from a pipe.
``python -m benchmarks.micro.chunk_items``: a chunk of coroutine calls without a Task per item.
"""
