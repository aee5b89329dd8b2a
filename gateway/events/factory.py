"""The event bus a configuration asks for (``[events]``), or None when events are off."""

from __future__ import annotations

import ssl
from urllib.parse import urlsplit

from gateway.config import EventsConfig
from gateway.events.bus import EventBus, Sink
from gateway.events.detector import EventDetector
from gateway.events.model import EventType
from gateway.events.new_imsi import ImsiHistory
from gateway.events.sinks import StreamSyslog, UdpSyslog, Webhook
from gateway.events.syslog import SyslogFormatter


def build_bus(config: EventsConfig, history: ImsiHistory | None = None) -> EventBus | None:
    """``history``: the observation log, which new_imsi asks about IMEIs it does not remember."""
    if not config.types:
        return None
    sinks: list[Sink] = []
    if config.syslog:
        url = urlsplit(config.syslog)
        assert url.hostname is not None and url.port is not None  # checked by gateway.config
        formatter = SyslogFormatter(config.syslog_facility, config.syslog_hostname or None,
                                    config.syslog_sd_id, config.mask_imsi)
        if url.scheme == "udp":
            sinks.append(UdpSyslog(url.hostname, url.port, formatter))
        else:
            context = None
            if url.scheme == "tls":
                context = ssl.create_default_context(cafile=config.syslog_tls_ca)
                if config.syslog_tls_cert:
                    # RFC 5425 §4.2.1: the receiver may authenticate us by certificate.
                    context.load_cert_chain(config.syslog_tls_cert, config.syslog_tls_key)
            sinks.append(StreamSyslog(url.hostname, url.port, formatter, context))
    if config.webhook_url:
        sinks.append(Webhook(config.webhook_url, config.webhook_secret, config.mask_imsi,
                             config.webhook_timeout, config.webhook_retries,
                             config.webhook_backoff))
    if not sinks:
        return None
    detector = EventDetector((EventType(t) for t in config.types), config.new_imsi_memory,
                             history)
    return EventBus(detector, sinks, config.queue_size)
