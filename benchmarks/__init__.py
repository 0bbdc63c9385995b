"""Benchmarks of aioexec against ProcessPoolExecutor, loky and aiomultiprocess.

Run ``python -m benchmarks --help``; see README.md in this folder for the workloads and targets.
Module map: ``run`` (CLI, one subprocess per engine x workload), ``_worker`` (that
subprocess), ``engines`` (adapters), ``workloads``/``workloads_more`` (the measurements),
``tasks`` (what runs in the pools' children), ``httpserver`` (loopback server), ``report``.
"""
