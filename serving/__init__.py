"""The serving side of fraud-bento, in rooms (telemetry, contract, scoring, protocols, payments,
http: each above the ones before it), with on top what a deployment serves (deployment), one API
worker built from it (worker) and the backfill command (__main__).

Nothing here imports training/ or monitoring/: the model carries its feature schema and threshold,
and service.py hands the worker its monitoring process.
"""
