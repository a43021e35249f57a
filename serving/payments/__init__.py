"""/score's raw payments: their request types (payment_requests), the scoring of a payment from
the online state (payment_scoring), and that state: what it keeps and its interface
(payment_state), embedded in memory and SQLite (embedded_state) or on Redis (redis_state).
Above protocols and scoring."""
