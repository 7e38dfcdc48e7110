"""The control plane around a running pipeline (not in its data flow): an HTTP server with a route table
(:mod:`.server`), the Prometheus exposition of the pipeline's counters (:mod:`.prometheus`) and the endpoints
that probe it and add or remove its sources (:mod:`.api`). docs/control.md documents them."""
