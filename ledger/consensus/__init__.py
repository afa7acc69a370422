"""Tendermint BFT consensus for the community ledger (Buchman, Kwon, Milosevic 2018, Alg. 1).

Owns: the pure per-height protocol core (:mod:`core`), signed proposals/votes/commits
(:mod:`messages`), the weighted proposer rotation (:mod:`validators`), commit and evidence
verification, the double-sign guard (:mod:`privval`), the write-ahead log (:mod:`wal`), and the
engine that drives them from a transport and a clock (:mod:`engine`, with the height
lifecycle in :mod:`heights`, compact blocks in :mod:`compact`, block sync in :mod:`sync`).
Spec: docs/spec/consensus.md.

May import: ``ledger.codec``, ``ledger.keys``, ``ledger.errors``, ``ledger.transport``, the
standard library and LMDB; ``ledger.registry`` only for the ``DoubleSign`` record that
:func:`ledger.consensus.evidence.ledger_verifier` returns. Never ``edge``, ``meters`` or the
ledger's state machine: the application is reached only through the
:class:`ledger.consensus.app.ConsensusApp` port (ledger/node.py adapts the ledger to it).
"""
