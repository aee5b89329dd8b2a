"""The server side of one HTTP/2 connection, sans-IO (TS 29.500 §5.2: HTTP/2 per RFC 9113).

h2's ``H2Connection`` is the protocol state machine (frames, HPACK, stream states, flow
control); this class adds what the service needs around it: complete requests out as
:class:`RequestReceived`, responses in with :meth:`Http2Session.respond`, response bodies held
back while the peer's flow-control window is shut and sent when WINDOW_UPDATE opens it. Bytes in
(:meth:`receive`), bytes out (:meth:`data_to_send`); no sockets, no clock.

Bounds, announced in our SETTINGS (RFC 9113 §6.5.2) and enforced by h2: concurrent streams,
header list size (HPACK-decoded), and our receive window. A peer that breaks them, or any other
connection error, gets GOAWAY and :attr:`closed` turns True.
"""

from __future__ import annotations

from dataclasses import dataclass

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.events import (
    RequestReceived as H2RequestReceived,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes

from gateway.n5g_eir.problem import Response
from gateway.n5g_eir.settings import N5gEirSettings


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request whose headers (and body, if any: discarded) have all arrived."""

    stream_id: int
    method: bytes
    path: bytes


class Http2Session:
    def __init__(self, settings: N5gEirSettings) -> None:
        # Header validation stays on (RFC 9113 §8.2: malformed requests are stream errors);
        # our own outbound headers are fixed and lower-case, so h2 need not re-check them.
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self._conn = H2Connection(config)
        self._conn.local_settings.update({
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: settings.max_header_list_bytes,
            SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_bytes,
            SettingCodes.ENABLE_PUSH: 0,
        })
        # Streams whose headers came without END_STREAM: (method, path) until the body ends.
        self._incomplete: dict[int, tuple[bytes, bytes]] = {}
        # Response bodies (the rest of them) waiting for the peer's flow-control window.
        self._blocked: dict[int, bytes] = {}
        self.closed = False
        self.error: str | None = None  # why the connection failed, for the log

    def initiate(self) -> None:
        """The server connection preface: our SETTINGS (RFC 9113 §3.4)."""
        self._conn.initiate_connection()

    def receive(self, data: bytes) -> list[RequestReceived]:
        """Feed bytes from the peer; returns the requests they completed, oldest first."""
        if self.closed:
            return []
        conn = self._conn
        try:
            events = conn.receive_data(data)
        except ProtocolError as exc:
            # h2 queued GOAWAY with the error code (RFC 9113 §5.4.1).
            self.closed = True
            self.error = f"HTTP/2 protocol error: {exc}"
            return []
        out: list[RequestReceived] = []
        for event in events:
            if isinstance(event, H2RequestReceived):
                method = path = b""
                for name, value in event.headers or ():
                    if name == b":method":
                        method = value
                    elif name == b":path":
                        path = value
                if event.stream_ended is not None:
                    out.append(RequestReceived(event.stream_id, method, path))
                else:
                    self._incomplete[event.stream_id] = (method, path)
            elif isinstance(event, DataReceived):
                # GET has no body (RFC 9110 §9.3.1); one sent anyway is read and dropped, and
                # its bytes returned to the window so that the stream cannot stall.
                if event.flow_controlled_length:
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                head = self._incomplete.pop(event.stream_id, None)
                if head is not None:
                    out.append(RequestReceived(event.stream_id, *head))
            elif isinstance(event, StreamReset):
                self._incomplete.pop(event.stream_id, None)
                self._blocked.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                self._unblock()
            elif isinstance(event, ConnectionTerminated):
                self.closed = True
                if event.error_code not in (ErrorCodes.NO_ERROR, None):
                    self.error = f"peer sent GOAWAY {event.error_code!r}"
        return out

    def respond(self, stream_id: int, response: Response) -> bool:
        """Queue the response of a stream; False when the stream is gone (reset by the peer)."""
        if self.closed:
            return False
        headers = [
            (b":status", str(response.status).encode()),
            (b"content-type", response.content_type),
            (b"content-length", str(len(response.body)).encode()),
            *response.headers,
        ]
        try:
            self._conn.send_headers(stream_id, headers)
            self._send_body(stream_id, response.body)
        except H2Error:
            return False  # RST_STREAM crossed the response: nothing to send
        return True

    def _send_body(self, stream_id: int, body: bytes) -> None:
        conn = self._conn
        while True:
            size = min(
                conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size, len(body)
            )
            if size == len(body):
                conn.send_data(stream_id, body, end_stream=True)
                return
            if size <= 0:
                self._blocked[stream_id] = body
                return
            conn.send_data(stream_id, body[:size])
            body = body[size:]

    def _unblock(self) -> None:
        for stream_id, body in list(self._blocked.items()):
            del self._blocked[stream_id]
            try:
                self._send_body(stream_id, body)
            except H2Error:
                pass  # the stream went away meanwhile

    def shutdown(self) -> None:
        """Close (RFC 9113 §6.8): GOAWAY NO_ERROR naming the last stream we processed. h2 sends
        nothing after it, so the server calls this once the answers in flight are out."""
        if not self.closed:
            self._conn.close_connection(ErrorCodes.NO_ERROR)

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()
