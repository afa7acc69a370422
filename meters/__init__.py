"""Smart-meter drivers, OBIS parsing, the simulated meter and the 15-minute slot integrator.

Owns: IEC 62056-21 mode C over serial, DSMR P1 push telegrams, Modbus RTU/TCP register maps, the
simulated household/PV meter (and its device endpoints), and turning cumulative readings into
per-slot import/export records.

May import: the standard library and the meter libraries (pyserial, pymodbus, dsmr_parser).
Never ledger, market, edge or MQTT.
"""
