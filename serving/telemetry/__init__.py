"""What a worker tells about itself: Prometheus metrics (metrics), the per-protocol request
tally flushed into them (traffic), the /stats figures (stats), the log setup (logs) and the
event-loop stall watch (loop_watch). The floor of serving/: it imports no other room."""
