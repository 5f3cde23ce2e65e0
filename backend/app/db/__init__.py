"""MongoDB: the connection, the collections and their indexes, and the embedded default server."""
