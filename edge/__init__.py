"""The daemon ``lemd`` and the technician CLI ``lemctl``: the one place where parts are wired.

Owns: config, the durable measurement outbox, schedulers, the local REST API, metrics, the
systemd notify/watchdog protocol, provisioning and joining.

May import: every other lem-edge package. Nothing imports ``edge``.
"""
