"""Profiles, drift, the prediction log and delayed labels, in a process beside each API worker.

SCORE_COLUMN is kept here, apart from the profiling modules, because the service names it at
import time and whylogs with scipy would add 1.2 s to each process of a server start (the
`bentoml serve` CLI's and every worker's)."""

SCORE_COLUMN = "fraud_probability"  # the model's output, profiled beside its inputs
