"""The community ledger: codec, keys, transactions, state machine, stores, consensus, transports.

Owns: everything that must be byte-for-byte identical on every node, and the BFT protocol that
makes it so.

May import: ``market`` (through the settlement port only), the standard library, msgpack,
PyNaCl, LMDB, aiomqtt. Never ``edge`` or ``meters``. Never blocks the event loop.
"""
