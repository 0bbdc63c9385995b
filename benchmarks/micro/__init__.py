"""Micro-benchmarks of the cores of proposed library changes, measured in isolation.

``python -m benchmarks.micro.recv_bytes``: receiving a large ``bytes`` from a pipe.
"""
