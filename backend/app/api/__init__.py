"""The HTTP layer's shared parts: dependencies, the error-to-HTTP mapping and middleware."""
