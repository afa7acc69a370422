"""Distribution-network topology as data, and distances along the lines (docs/spec/cda.md §2).

The system operator (SO) keeps the network's bus graph on the ledger (seed 003 §2.3: "the SO ...
updates the state of the network stored in the ledger every time a change of topology occurs").
The NCDA engine (:mod:`market.cda`) uses it to pick, among the offers that are good enough, the
one nearest to the asker. Distance is the shortest path along in-service branches, summed in
integer metres, so every node computes the same number; a transformer or a closed bus coupler is
a branch of length 0 m. An open switch is simply a branch left out of the published data.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from market.errors import InvalidInput

#: Upper bounds that keep one PublishTopology tx (and the all-pairs table it implies) small.
MAX_BUSES = 1024
MAX_LINES = 4096
MAX_LENGTH_M = 10_000_000  # 10 000 km: anything longer is a unit mistake (km given as m·1000?)
MAX_NAME_CHARS = 64


@dataclass(frozen=True, slots=True)
class Line:
    """One in-service branch between two buses.

    Attributes:
        from_bus: id of one end.
        to_bus: id of the other end (the graph is undirected).
        length_m: length along the route [m]; 0 for transformers and bus couplers.
    """

    from_bus: str
    to_bus: str
    length_m: int


@dataclass(frozen=True)
class Topology:
    """A bus graph with integer branch lengths; immutable once built.

    Build it with :meth:`from_data` (validated) or directly from trusted values. Distances are
    computed once, on first use, for all pairs (Dijkstra from every bus; a few ms for 50 buses).

    Attributes:
        buses: bus ids, unique, in the order published.
        lines: in-service branches.
    """

    buses: tuple[str, ...]
    lines: tuple[Line, ...]
    _dist: dict[str, dict[str, int]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        _validate(self.buses, self.lines)

    def distance_m(self, a: str, b: str) -> int | None:
        """Shortest distance along the lines from bus ``a`` to bus ``b``.

        Args:
            a: a bus id of this topology.
            b: a bus id of this topology.

        Returns:
            The distance [m], or ``None`` when no path joins the two buses (separate islands).

        Raises:
            InvalidInput: ``a`` or ``b`` is not a bus of this topology.
        """
        for name, bus in (("bus", a), ("bus", b)):
            if bus not in self._index():
                raise InvalidInput(name, bus, "not a bus of the published topology")
        row = self._dist.get(a)
        if row is None:
            row = _dijkstra(a, self._adjacency())
            self._dist[a] = row
        return row.get(b)

    def to_data(self) -> dict[str, object]:
        """The canonical plain-data form (for the ledger codec and JSON files)."""
        return {
            "buses": list(self.buses),
            "lines": [[ln.from_bus, ln.to_bus, ln.length_m] for ln in self.lines],
        }

    @classmethod
    def from_data(cls, data: object) -> Topology:
        """Build from ``{"buses": [id, ...], "lines": [[from, to, length_m], ...]}``.

        Raises:
            InvalidInput: a field is missing or has the wrong type, naming its path.
        """
        if not isinstance(data, Mapping):
            raise InvalidInput("topology", data, "must be a map with 'buses' and 'lines'")
        buses = data.get("buses")
        lines = data.get("lines")
        if not isinstance(buses, Sequence) or isinstance(buses, str | bytes):
            raise InvalidInput("topology.buses", buses, "must be a list of bus ids")
        if not isinstance(lines, Sequence) or isinstance(lines, str | bytes):
            raise InvalidInput("topology.lines", lines, "must be a list of [from, to, length_m]")
        parsed: list[Line] = []
        for i, item in enumerate(lines):
            if not isinstance(item, Sequence) or isinstance(item, str | bytes) or len(item) != 3:
                raise InvalidInput(f"topology.lines[{i}]", item, "must be [from, to, length_m]")
            parsed.append(Line(item[0], item[1], item[2]))
        return cls(tuple(buses), tuple(parsed))

    def _index(self) -> frozenset[str]:
        return frozenset(self.buses)

    def _adjacency(self) -> dict[str, list[tuple[str, int]]]:
        adj: dict[str, list[tuple[str, int]]] = {b: [] for b in self.buses}
        for ln in self.lines:
            adj[ln.from_bus].append((ln.to_bus, ln.length_m))
            adj[ln.to_bus].append((ln.from_bus, ln.length_m))
        return adj


def _dijkstra(source: str, adj: Mapping[str, list[tuple[str, int]]]) -> dict[str, int]:
    """Shortest integer distances from ``source``; ties cannot change an integer minimum."""
    dist = {source: 0}
    heap: list[tuple[int, str]] = [(0, source)]
    while heap:
        d, bus = heapq.heappop(heap)
        if d > dist[bus]:
            continue
        for nxt, length in adj[bus]:
            nd = d + length
            if nd < dist.get(nxt, nd + 1):
                dist[nxt] = nd
                heapq.heappush(heap, (nd, nxt))
    return dist


def _check_name(path: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(path, value, f"must be a non-empty string of <= {MAX_NAME_CHARS} chars")


def _validate(buses: tuple[str, ...], lines: tuple[Line, ...]) -> None:
    if not 0 < len(buses) <= MAX_BUSES:
        raise InvalidInput("topology.buses", len(buses), f"needs 1..{MAX_BUSES} buses")
    if len(lines) > MAX_LINES:
        raise InvalidInput("topology.lines", len(lines), f"at most {MAX_LINES} lines")
    for i, bus in enumerate(buses):
        _check_name(f"topology.buses[{i}]", bus)
    if len(set(buses)) != len(buses):
        dup = sorted(b for b in set(buses) if buses.count(b) > 1)
        raise InvalidInput("topology.buses", dup, "bus ids must be unique")
    known = set(buses)
    for i, ln in enumerate(lines):
        path = f"topology.lines[{i}]"
        for end, bus in (("from_bus", ln.from_bus), ("to_bus", ln.to_bus)):
            _check_name(f"{path}.{end}", bus)
            if bus not in known:
                raise InvalidInput(f"{path}.{end}", bus, "not listed in topology.buses")
        if ln.from_bus == ln.to_bus:
            raise InvalidInput(path, ln.from_bus, "a line must join two different buses")
        length = ln.length_m
        if isinstance(length, bool) or not isinstance(length, int):
            raise InvalidInput(f"{path}.length_m", length, "must be an integer number of metres")
        if not 0 <= length <= MAX_LENGTH_M:
            raise InvalidInput(f"{path}.length_m", length, f"must be in 0..{MAX_LENGTH_M} m")
