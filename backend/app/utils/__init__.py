"""Domain utilities: the file reader and the anomaly detector (no HTTP, no MongoDB).

Importing this package must stay cheap: TensorFlow is loaded only when a model is built or loaded.
"""
