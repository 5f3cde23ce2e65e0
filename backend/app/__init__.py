"""Tabular anomaly detection: a pre-trained autoencoder served over a FastAPI REST API."""
