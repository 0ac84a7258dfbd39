"""The testbed: a real Go ``net/http`` server and ``http.Client`` load generator on loopback.

stormsim's answers are only as good as its model of Go's stack; this package holds the
model to the real thing. ``config`` turns the subset of a scenario the testbed can express
into the JSON both Go programs read (and scales it to fit a small machine), ``build``
compiles the Go programs (standard library only, nothing downloaded), ``run`` starts them on
127.0.0.1, samples the server every ``sample_interval`` and ends them by pid, and
``collect`` turns what they wrote into a ``RunResult`` summarised by ``sim.outputs``, so a
testbed run has the same summary keys and time series as a simulated one.
``experiments.calibrate`` sets the two side by side. docs/calibration.md has the method
and the results.
"""
