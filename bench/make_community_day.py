"""Write examples/community_day.json: one May day (96 slots) of a 19-home village.

Deterministic (fixed seed): running it again gives the same file byte for byte, which
tests/unit/edge/test_cli_settle.py checks. Profiles: bench/community_profiles.py.

    .venv/bin/python bench/make_community_day.py
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from community_profiles import SLOTS_PER_DAY, generate

SEED = 20260515
MEMBERS = 19
DAY = datetime(2026, 5, 15, tzinfo=UTC)
OUT = Path(__file__).resolve().parents[1] / "examples" / "community_day.json"
# Plausible Swiss figures with 1 ECT ~ 1 CHF: grid tariff 0.27, feed-in 0.08 [ECT/kWh]; the
# community trades locally at 0.22 / 0.12; a small power-market coefficient [ECT/kWh²].
PARAMS = {
    "p_buy_bau": "0.27",
    "p_sell_bau": "0.08",
    "p_buy_lem": "0.22",
    "p_sell_lem": "0.12",
    "beta": "0.0005",
}


def render() -> str:
    """The file's text: one line per member measurement, so diffs stay readable."""
    village, slots = generate(MEMBERS, 1, SEED)
    names = [home.name for home in village]
    lines = [
        "{",
        f' "source": "bench/make_community_day.py (seed {SEED}): synthetic May day, '
        f'{MEMBERS} homes, PV on some; integer Wh per 15-minute slot",',
        f' "params": {json.dumps(PARAMS)},',
        f' "members": {json.dumps(names)},',
        ' "slots": [',
    ]
    for k, (imports, exports) in enumerate(slots):
        start = (DAY + timedelta(minutes=15 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
        measures = ",\n".join(
            f'   "{n}": {{"import_wh": {i}, "export_wh": {e}}}'
            for n, i, e in zip(names, imports, exports, strict=True)
        )
        tail = "," if k < SLOTS_PER_DAY - 1 else ""
        lines.append(f'  {{"start": "{start}", "measures": {{\n{measures}}}}}{tail}')
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
