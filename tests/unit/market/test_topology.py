"""Topology as data and distances along the lines (docs/spec/cda.md §2)."""

from __future__ import annotations

import pytest

from market.errors import InvalidInput
from market.topology import Line, Topology

# CIGRE MV benchmark (CIGRE TF C6.04.02, 2014), feeder lengths [m] as in pandapower's
# create_cigre_network_mv; switches S1 (8-14), S2 (6-7), S3 (4-11) open, so those lines are out.
# Buses 1 and 12 hang off the 110 kV bus 0 through transformers (0 m).
CIGRE_LINES = [
    ("1", "2", 2820),
    ("2", "3", 4420),
    ("3", "4", 610),
    ("4", "5", 560),
    ("5", "6", 1540),
    ("7", "8", 1670),
    ("8", "9", 320),
    ("9", "10", 770),
    ("10", "11", 330),
    ("3", "8", 1300),
    ("12", "13", 4890),
    ("13", "14", 2990),
    ("0", "1", 0),
    ("0", "12", 0),
]


def cigre() -> Topology:
    return Topology.from_data(
        {"buses": [str(i) for i in range(15)], "lines": [list(x) for x in CIGRE_LINES]}
    )


def test_cigre_distances_follow_the_feeder() -> None:
    """Distances are shortest sums of line lengths, through the 0 m transformers."""
    topo = cigre()
    assert topo.distance_m("5", "10") == 560 + 610 + 1300 + 320 + 770
    assert topo.distance_m("6", "7") == 1540 + 560 + 610 + 1300 + 1670  # S2 open: long way
    assert topo.distance_m("14", "8") == 2990 + 4890 + 0 + 0 + 2820 + 4420 + 1300
    assert topo.distance_m("4", "4") == 0


def test_closing_a_switch_shortens_the_path() -> None:
    """Publishing the 6-7 line (S2 closed) makes 6 and 7 neighbours at 240 m."""
    data = cigre().to_data()
    lines = data["lines"]
    assert isinstance(lines, list)
    lines.append(["6", "7", 240])
    assert Topology.from_data(data).distance_m("6", "7") == 240


def test_islands_have_no_distance() -> None:
    """Buses with no path between them have distance None, not a made-up number."""
    topo = Topology(("a", "b", "c"), (Line("a", "b", 5),))
    assert topo.distance_m("a", "c") is None
    assert topo.distance_m("b", "a") == 5


def test_round_trip_through_plain_data() -> None:
    """to_data and from_data are inverse, so the ledger can store the topology as data."""
    topo = cigre()
    assert Topology.from_data(topo.to_data()) == topo


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"buses": ["a", "a"], "lines": []}, "topology.buses"),
        ({"buses": ["a", "b"], "lines": [["a", "z", 1]]}, "topology.lines[0].to_bus"),
        ({"buses": ["a", "b"], "lines": [["a", "b", 1.5]]}, "topology.lines[0].length_m"),
        ({"buses": ["a", "b"], "lines": [["a", "b", -1]]}, "topology.lines[0].length_m"),
        ({"buses": ["a", "b"], "lines": [["a", "b", True]]}, "topology.lines[0].length_m"),
        ({"buses": ["a", "b"], "lines": [["a", "a", 1]]}, "topology.lines[0]"),
        ({"buses": ["a", "b"], "lines": [["a", "b"]]}, "topology.lines[0]"),
        ({"buses": [], "lines": []}, "topology.buses"),
        ({"buses": ["a", 3], "lines": []}, "topology.buses[1]"),
        ({"lines": []}, "topology.buses"),
        ([], "topology"),
    ],
)
def test_bad_topology_names_the_field(data: object, field: str) -> None:
    """Malformed topology data is refused with the path of the offending field."""
    with pytest.raises(InvalidInput) as err:
        Topology.from_data(data)
    assert err.value.field == field


def test_unknown_bus_in_query_is_refused() -> None:
    """Asking for a distance to a bus that is not published is an error, not None."""
    with pytest.raises(InvalidInput, match="not a bus"):
        cigre().distance_m("1", "99")
