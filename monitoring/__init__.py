"""Profiles, drift, the prediction log and delayed labels, in a process beside each API worker.

SCORE_COLUMN is kept here, apart from the profiling modules, because the service names it at
import time and whylogs with scipy would add a second and a half to every server start."""

SCORE_COLUMN = "fraud_probability"  # the model's output, profiled beside its inputs
