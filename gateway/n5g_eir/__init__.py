"""N5g-eir: the 5G-EIR's Equipment Identity Check service for AMFs (3GPP TS 29.511) over HTTP/2,
on the same classifier, policy, lists, observation log and metrics as S13.

Modules: ``identities`` (PEI, SUPI, GPSI of TS 29.571), ``request`` (GetEquipmentStatus query
parsing), ``problem`` (EirResponseData and ProblemDetails), ``equipment_status`` (query ->
classifier -> response), ``frames`` (HTTP/2 frame types, flags, error codes, settings and per-type rules as data),
``hpack`` (RFC 7541 decoder, stateless encoder), ``http2`` (sans-IO HTTP/2 server session),
``server`` (asyncio listeners), ``metrics`` (HTTP metrics), ``settings``.
"""
