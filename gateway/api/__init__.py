"""The provisioning and query API (HTTP/1.1 JSON): operator lists, checks, TAC records,
observations, clone-detection state and the audit log, over the service layer the CLI uses
(gateway.provisioning, gateway.report). Served by the gateway on ``[api] listen`` or standalone
with ``eir-gateway api``.
"""
