"""Course-staff tools: ``release`` (the student repository), ``reproduce`` (every worksheet
experiment into a results folder) and ``worksheet`` (its measured tables and figures).

This package imports the student package, never the reverse; the student release leaves it out.
"""
