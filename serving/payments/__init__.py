"""/score's raw payments: their request types and the scoring of a payment from the online
state (payment_scoring), and that state, embedded (payment_state) or on Redis
(payment_state_redis). Above protocols and scoring."""
