"""``lemctl``: the technician's and auditor's command line. One module per command group."""
