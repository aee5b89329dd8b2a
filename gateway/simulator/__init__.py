"""Simulated MMEs for load and conformance testing of the EIR (``eir-gateway simulate``).

- :mod:`gateway.simulator.traffic`: IMEI files and generator, pre-encoded MICR templates,
  minimal answer scanning.
- :mod:`gateway.simulator.runner`: the connections (initiator peers) and the open/closed loop
  drivers.
- :mod:`gateway.simulator.report`: counters, percentiles, histograms, text and JSON.
- :mod:`gateway.simulator.pcap`: the exchanged messages as a pcap file.
"""
