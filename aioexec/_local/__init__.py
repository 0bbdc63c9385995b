"""The local process engine: child processes on this machine, each running an event loop.

``engine`` (the ``Engine`` the front talks to), ``manager`` (the manager thread), ``pool``
(the shared scheduling state), ``answers`` (answers, deaths, breaking), ``lease`` (an event
loop reading its own answers), ``messages``, ``process`` (the parent's handle of a child),
``child`` (what runs in the child), ``protocol`` (sans-IO framing), ``pipeio`` and ``forks``.
A child imports only ``child``, ``protocol``, ``pipeio`` and the worker runtime.
"""
