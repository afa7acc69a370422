"""Test helpers with real parts: a mosquitto broker, a fault-injecting TCP proxy, a test PKI."""
