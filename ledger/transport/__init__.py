"""Transports that carry signed ledger messages between nodes: in-memory (tests) and MQTT."""
