"""Tx-kind handlers, one module per application (docs/spec/ledger.md §2 "Registry").

Importing this package imports every module of :data:`APP_MODULES`, and each registers its kinds
with ``ledger.registry.register``. Adding a market = a new module + one line here.
"""

from __future__ import annotations

import importlib

APP_MODULES: tuple[str, ...] = (
    "ledger.apps.meters",
    "ledger.apps.amm",
    "ledger.apps.bank",
    "ledger.apps.governance",
    "ledger.apps.evidence",
    "ledger.apps.windows",
    "ledger.apps.schedules",
    "ledger.apps.powerchain",
    "ledger.apps.powerchain_book",
    "ledger.apps.privacy",
    "ledger.apps.join",
    "ledger.apps.cda",
)

for _name in APP_MODULES:
    importlib.import_module(_name)
