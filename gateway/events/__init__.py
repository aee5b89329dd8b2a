"""Decision events for fraud and law-enforcement systems: what happened (a listed handset, a
new IMSI with an IMEI, clone suspected, a registry report hit), sent to RFC 5424 syslog (UDP,
TCP with octet counting, TLS) and signed webhooks, off the check path: the S13 handler only
queues (bounded; drops counted), sinks send from their own tasks.
"""
