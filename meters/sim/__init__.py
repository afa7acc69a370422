"""The simulated meter: household load, rooftop PV and a battery, played back on a clock.

Owns: the compact profile table (:mod:`meters.sim.table`, pure Python), its offline generation
from demandlib's BDEW profiles and pvlib's clear-sky model (:mod:`meters.sim.profiles`, the only
module that imports them, lazily), the seeded playback that implements the ``MeterDriver`` port
(:mod:`meters.sim.meter`), the clocks it runs on (:mod:`meters.sim.clock`) and the Lugaggia
pilot community (:mod:`meters.sim.community`). Spec: docs/spec/simulator.md.

May import: the standard library, msgpack and ``meters.reading``. pandas, numpy, pvlib and
demandlib only inside :mod:`meters.sim.profiles` functions, never on the daemon's runtime path.
"""
