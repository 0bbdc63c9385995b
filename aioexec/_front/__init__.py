"""The front: the public API every engine shares.

``executor`` (submit, map, run, amap, shutdown), ``routing`` (where a call runs), ``futures``
and ``completion`` (the futures and how outcomes reach them), ``mapping`` (map and amap),
``local`` (the executor's own threads), ``options``, ``scheduler``, and ``engine``: the
interface, the one door to an engine. Importing this package costs nothing: a worker process
imports none of it.
"""
