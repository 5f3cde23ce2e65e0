"""Settings and cross-cutting concerns."""
