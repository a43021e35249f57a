"""The request contract: the rules of a valid scoring request, written once (contract), the
errors that carry their HTTP status (errors) and the documented response types (schema).
Above telemetry; below every room that decodes or answers a request."""
