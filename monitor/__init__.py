"""driftline's pure domain core: events, schema, binning, windows, drift, evaluation.

Nothing in this package does I/O, starts threads or reads the clock: time is passed in.
"""
