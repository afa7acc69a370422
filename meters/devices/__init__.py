"""Device simulators: the meter side of a protocol, served on a real pty or socket.

They let the real drivers be tested end to end (IEC 62056-21 on a pseudo-terminal, Modbus TCP via
pymodbus) and let demos run without hardware. Their fault hooks (corrupted BCC, silence,
vanishing) are constructor options of the simulated device, never flags of a driver.
"""
