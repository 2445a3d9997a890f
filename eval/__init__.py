"""Benchmark tasks, metrics, the async live-API client, reports, comparisons, the quality
gate and the load test (`bioinstruct load`). Talks to the service over HTTP only (never imports `service`)."""
