"""Data access: the only modules that speak to MongoDB. Each returns plain records with string ids."""
