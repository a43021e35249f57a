"""The request contract: the rules of a valid scoring request, written once (rules), the
refusals that carry their status, headers and counted outcome (refusals) and the documented
response types (schema). Above telemetry; below every room that decodes or answers a request."""
