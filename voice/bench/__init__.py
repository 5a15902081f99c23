"""`voice bench`: latency benchmark harness and reference speech boundaries."""
