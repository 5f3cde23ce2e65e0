"""The service layer: what the API does, independent of HTTP. Routes call these; these call ``app.crud``."""
