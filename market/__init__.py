"""Pure, deterministic market settlement engines.

Owns: the AMM local energy market and local power market of the reference paper (seed 000) and
the further mechanisms of the other source documents, each as its own module.

May import: the standard library only (``fractions``, ``decimal``, ``dataclasses``). Never
asyncio, time, random, I/O, nor any other lem-edge package. Money is integer µECT, energy integer
Wh; exact rationals inside, rounded half-to-even at the edge.
"""
