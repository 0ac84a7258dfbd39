"""The validation suite behind ``stormsim validate``: why stormsim's numbers can be trusted.

Modules: ``analytic`` (closed forms), ``checks`` (what a check is, intervals, known
limitations), ``queueing`` (queues across a grid), ``observer`` and ``conservation`` (the
shipped scenarios), ``monotonicity``, ``semantics`` (the reference tests), ``convergence``,
``suite`` (plans and runner), ``figures`` and ``report`` (the HTML and JSON). docs/validation.md
explains each check.
"""
