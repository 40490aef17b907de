"""The seams between the engine and the host: Protocols (base) and the in-memory fake."""
