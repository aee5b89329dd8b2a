"""The peer state machine of RFC 6733 §5.6 as data: states, events, actions and the transition
table ``(PeerState, PeerEvent) -> (actions, next_state)``, with the RFC row above each entry.

``diameter.peer.Peer`` runs it; anything not in the table is ignored (logged) there.
"""

from __future__ import annotations

import enum

CER, DWR, DPR = 257, 280, 282  # RFC 6733 §5.3, §5.5, §5.4 command codes


class Role(enum.Enum):
    RESPONDER = "responder"
    INITIATOR = "initiator"


class PeerState(enum.Enum):
    """RFC 6733 §5.6 states (stable: CLOSED, I_OPEN, R_OPEN)."""

    CLOSED = "Closed"
    WAIT_CONN_ACK = "Wait-Conn-Ack"
    WAIT_I_CEA = "Wait-I-CEA"
    WAIT_CONN_ACK_ELECT = "Wait-Conn-Ack/Elect"
    WAIT_RETURNS = "Wait-Returns"
    R_OPEN = "R-Open"
    I_OPEN = "I-Open"
    CLOSING = "Closing"


OPEN_STATES = frozenset({PeerState.R_OPEN, PeerState.I_OPEN})


class PeerEvent(enum.Enum):
    """RFC 6733 §5.6.2 events, plus three local refinements of Process-CER/-CEA outcomes."""

    START = "Start"
    R_CONN_CER = "R-Conn-CER"
    I_RCV_CONN_ACK = "I-Rcv-Conn-Ack"
    I_RCV_CONN_NACK = "I-Rcv-Conn-Nack"
    TIMEOUT = "Timeout"
    R_RCV_CER = "R-Rcv-CER"
    I_RCV_CER = "I-Rcv-CER"
    R_RCV_CEA = "R-Rcv-CEA"
    I_RCV_CEA = "I-Rcv-CEA"
    I_RCV_NON_CEA = "I-Rcv-Non-CEA"
    I_PEER_DISC = "I-Peer-Disc"
    R_PEER_DISC = "R-Peer-Disc"
    R_RCV_DPR = "R-Rcv-DPR"
    I_RCV_DPR = "I-Rcv-DPR"
    R_RCV_DPA = "R-Rcv-DPA"
    I_RCV_DPA = "I-Rcv-DPA"
    WIN_ELECTION = "Win-Election"
    SEND_MESSAGE = "Send-Message"
    R_RCV_MESSAGE = "R-Rcv-Message"
    I_RCV_MESSAGE = "I-Rcv-Message"
    R_RCV_DWR = "R-Rcv-DWR"
    I_RCV_DWR = "I-Rcv-DWR"
    R_RCV_DWA = "R-Rcv-DWA"
    I_RCV_DWA = "I-Rcv-DWA"
    STOP = "Stop"
    # Local: Process-CER rejects the CER (RFC 6733 §5.3: 5010, 3010, malformed -> CEA, close).
    R_CONN_CER_REJECTED = "R-Conn-CER rejected"
    # Local: the first message on an incoming connection is not a CER (§5.6.1: close).
    R_CONN_NON_CER = "R-Conn-Non-CER"
    # Local: Process-CEA finds a failure Result-Code or no common application (§5.3).
    I_RCV_CEA_FAILED = "I-Rcv-CEA failed"


class Action(enum.Enum):
    """RFC 6733 §5.6.3 actions (I-/R- prefixes name the connection they act on)."""

    I_SND_CONN_REQ = "I-Snd-Conn-Req"
    R_ACCEPT = "R-Accept"
    R_REJECT = "R-Reject"
    PROCESS_CER = "Process-CER"
    I_SND_CER = "I-Snd-CER"
    R_SND_CEA = "R-Snd-CEA"
    I_SND_CEA = "I-Snd-CEA"
    R_SND_CEA_ERROR = "R-Snd-CEA (error)"
    CLEANUP = "Cleanup"
    ERROR = "Error"
    PROCESS_CEA = "Process-CEA"
    SND_DPR = "Snd-DPR"
    SND_DPA = "Snd-DPA"
    I_DISC = "I-Disc"
    R_DISC = "R-Disc"
    DISC = "Disc"
    ELECT = "Elect"
    SND_MESSAGE = "Snd-Message"
    PROCESS = "Process"
    PROCESS_ANSWER = "Process (answers only)"
    PROCESS_DWR = "Process-DWR"
    SND_DWA = "Snd-DWA"
    PROCESS_DWA = "Process-DWA"


S, E, A = PeerState, PeerEvent, Action

# RFC 6733 §5.6, the peer state machine table: State / Event / Action / New State.
TRANSITIONS: dict[tuple[PeerState, PeerEvent], tuple[tuple[Action, ...], PeerState]] = {
    # Closed  Start  I-Snd-Conn-Req  Wait-Conn-Ack
    (S.CLOSED, E.START): ((A.I_SND_CONN_REQ,), S.WAIT_CONN_ACK),
    # Closed  R-Conn-CER  R-Accept, Process-CER, R-Snd-CEA  R-Open
    (S.CLOSED, E.R_CONN_CER): ((A.R_ACCEPT, A.PROCESS_CER, A.R_SND_CEA), S.R_OPEN),
    # local: Closed  R-Conn-CER that Process-CER rejects  R-Snd-CEA (error), R-Disc  Closed
    (S.CLOSED, E.R_CONN_CER_REJECTED): ((A.R_SND_CEA_ERROR, A.R_DISC), S.CLOSED),
    # local (§5.6.1): Closed  first message not a CER  R-Disc  Closed
    (S.CLOSED, E.R_CONN_NON_CER): ((A.R_DISC,), S.CLOSED),
    # local (§5.6.1): Closed  no CER within the timeout  R-Disc  Closed
    (S.CLOSED, E.TIMEOUT): ((A.R_DISC,), S.CLOSED),
    # local: Closed  Peer-Disc / Stop before any CER  Cleanup  Closed
    (S.CLOSED, E.R_PEER_DISC): ((A.CLEANUP,), S.CLOSED),
    (S.CLOSED, E.STOP): ((A.CLEANUP,), S.CLOSED),
    # Wait-Conn-Ack  I-Rcv-Conn-Ack  I-Snd-CER  Wait-I-CEA
    (S.WAIT_CONN_ACK, E.I_RCV_CONN_ACK): ((A.I_SND_CER,), S.WAIT_I_CEA),
    # Wait-Conn-Ack  I-Rcv-Conn-Nack  Cleanup  Closed
    (S.WAIT_CONN_ACK, E.I_RCV_CONN_NACK): ((A.CLEANUP,), S.CLOSED),
    # Wait-Conn-Ack  R-Conn-CER  R-Accept, Process-CER  Wait-Conn-Ack/Elect
    (S.WAIT_CONN_ACK, E.R_CONN_CER): ((A.R_ACCEPT, A.PROCESS_CER), S.WAIT_CONN_ACK_ELECT),
    # Wait-Conn-Ack  Timeout  Error  Closed
    (S.WAIT_CONN_ACK, E.TIMEOUT): ((A.ERROR,), S.CLOSED),
    # local: Wait-Conn-Ack  Stop  Cleanup  Closed
    (S.WAIT_CONN_ACK, E.STOP): ((A.CLEANUP,), S.CLOSED),
    # Wait-I-CEA  I-Rcv-CEA  Process-CEA  I-Open
    (S.WAIT_I_CEA, E.I_RCV_CEA): ((A.PROCESS_CEA,), S.I_OPEN),
    # local: Wait-I-CEA  I-Rcv-CEA with a failure  Error  Closed
    (S.WAIT_I_CEA, E.I_RCV_CEA_FAILED): ((A.ERROR,), S.CLOSED),
    # Wait-I-CEA  R-Conn-CER  R-Accept, Process-CER, Elect  Wait-Returns
    (S.WAIT_I_CEA, E.R_CONN_CER): ((A.R_ACCEPT, A.PROCESS_CER, A.ELECT), S.WAIT_RETURNS),
    # Wait-I-CEA  I-Peer-Disc  I-Disc  Closed
    (S.WAIT_I_CEA, E.I_PEER_DISC): ((A.I_DISC,), S.CLOSED),
    # Wait-I-CEA  I-Rcv-Non-CEA  Error  Closed
    (S.WAIT_I_CEA, E.I_RCV_NON_CEA): ((A.ERROR,), S.CLOSED),
    # Wait-I-CEA  Timeout  Error  Closed
    (S.WAIT_I_CEA, E.TIMEOUT): ((A.ERROR,), S.CLOSED),
    # local: Wait-I-CEA  Stop  I-Disc  Closed
    (S.WAIT_I_CEA, E.STOP): ((A.I_DISC,), S.CLOSED),
    # Wait-Conn-Ack/Elect  I-Rcv-Conn-Ack  I-Snd-CER, Elect  Wait-Returns
    (S.WAIT_CONN_ACK_ELECT, E.I_RCV_CONN_ACK): ((A.I_SND_CER, A.ELECT), S.WAIT_RETURNS),
    # Wait-Conn-Ack/Elect  I-Rcv-Conn-Nack  R-Snd-CEA  R-Open
    (S.WAIT_CONN_ACK_ELECT, E.I_RCV_CONN_NACK): ((A.R_SND_CEA,), S.R_OPEN),
    # Wait-Conn-Ack/Elect  R-Peer-Disc  R-Disc  Wait-Conn-Ack
    (S.WAIT_CONN_ACK_ELECT, E.R_PEER_DISC): ((A.R_DISC,), S.WAIT_CONN_ACK),
    # Wait-Conn-Ack/Elect  R-Conn-CER  R-Reject  Wait-Conn-Ack/Elect
    (S.WAIT_CONN_ACK_ELECT, E.R_CONN_CER): ((A.R_REJECT,), S.WAIT_CONN_ACK_ELECT),
    # Wait-Conn-Ack/Elect  Timeout  Error  Closed (the responder connection closes with it)
    (S.WAIT_CONN_ACK_ELECT, E.TIMEOUT): ((A.ERROR, A.R_DISC), S.CLOSED),
    # Wait-Returns  Win-Election  I-Disc, R-Snd-CEA  R-Open
    (S.WAIT_RETURNS, E.WIN_ELECTION): ((A.I_DISC, A.R_SND_CEA), S.R_OPEN),
    # Wait-Returns  I-Peer-Disc  I-Disc, R-Snd-CEA  R-Open
    (S.WAIT_RETURNS, E.I_PEER_DISC): ((A.I_DISC, A.R_SND_CEA), S.R_OPEN),
    # local: Wait-Returns  I-Rcv-CEA with a failure: as I-Peer-Disc
    (S.WAIT_RETURNS, E.I_RCV_CEA_FAILED): ((A.I_DISC, A.R_SND_CEA), S.R_OPEN),
    # Wait-Returns  I-Rcv-CEA  R-Disc  I-Open (the CEA is processed to open the connection)
    (S.WAIT_RETURNS, E.I_RCV_CEA): ((A.R_DISC, A.PROCESS_CEA), S.I_OPEN),
    # Wait-Returns  R-Peer-Disc  R-Disc  Wait-I-CEA
    (S.WAIT_RETURNS, E.R_PEER_DISC): ((A.R_DISC,), S.WAIT_I_CEA),
    # Wait-Returns  R-Conn-CER  R-Reject  Wait-Returns
    (S.WAIT_RETURNS, E.R_CONN_CER): ((A.R_REJECT,), S.WAIT_RETURNS),
    # Wait-Returns  Timeout  Error  Closed
    (S.WAIT_RETURNS, E.TIMEOUT): ((A.ERROR, A.R_DISC), S.CLOSED),
    # R-Open  Send-Message  R-Snd-Message  R-Open
    (S.R_OPEN, E.SEND_MESSAGE): ((A.SND_MESSAGE,), S.R_OPEN),
    # R-Open  R-Rcv-Message  Process  R-Open
    (S.R_OPEN, E.R_RCV_MESSAGE): ((A.PROCESS,), S.R_OPEN),
    # R-Open  R-Rcv-DWR  Process-DWR, R-Snd-DWA  R-Open
    (S.R_OPEN, E.R_RCV_DWR): ((A.PROCESS_DWR, A.SND_DWA), S.R_OPEN),
    # R-Open  R-Rcv-DWA  Process-DWA  R-Open
    (S.R_OPEN, E.R_RCV_DWA): ((A.PROCESS_DWA,), S.R_OPEN),
    # R-Open  R-Conn-CER  R-Reject  R-Open
    (S.R_OPEN, E.R_CONN_CER): ((A.R_REJECT,), S.R_OPEN),
    # R-Open  Stop  R-Snd-DPR  Closing
    (S.R_OPEN, E.STOP): ((A.SND_DPR,), S.CLOSING),
    # R-Open  R-Rcv-DPR  R-Snd-DPA  Closing
    (S.R_OPEN, E.R_RCV_DPR): ((A.SND_DPA,), S.CLOSING),
    # R-Open  R-Peer-Disc  R-Disc  Closed
    (S.R_OPEN, E.R_PEER_DISC): ((A.R_DISC,), S.CLOSED),
    # R-Open  R-Rcv-CER  R-Snd-CEA  R-Open
    (S.R_OPEN, E.R_RCV_CER): ((A.R_SND_CEA,), S.R_OPEN),
    # R-Open  R-Rcv-CEA  Process-CEA  R-Open
    # (a CEA we did not ask for is discarded by its unknown Hop-by-Hop first, RFC 6733 §3)
    (S.R_OPEN, E.R_RCV_CEA): ((A.PROCESS_CEA,), S.R_OPEN),
    # I-Open  Send-Message  I-Snd-Message  I-Open
    (S.I_OPEN, E.SEND_MESSAGE): ((A.SND_MESSAGE,), S.I_OPEN),
    # I-Open  I-Rcv-Message  Process  I-Open
    (S.I_OPEN, E.I_RCV_MESSAGE): ((A.PROCESS,), S.I_OPEN),
    # I-Open  I-Rcv-DWR  Process-DWR, I-Snd-DWA  I-Open
    (S.I_OPEN, E.I_RCV_DWR): ((A.PROCESS_DWR, A.SND_DWA), S.I_OPEN),
    # I-Open  I-Rcv-DWA  Process-DWA  I-Open
    (S.I_OPEN, E.I_RCV_DWA): ((A.PROCESS_DWA,), S.I_OPEN),
    # I-Open  R-Conn-CER  R-Reject  I-Open
    (S.I_OPEN, E.R_CONN_CER): ((A.R_REJECT,), S.I_OPEN),
    # I-Open  Stop  I-Snd-DPR  Closing
    (S.I_OPEN, E.STOP): ((A.SND_DPR,), S.CLOSING),
    # I-Open  I-Rcv-DPR  I-Snd-DPA  Closing
    (S.I_OPEN, E.I_RCV_DPR): ((A.SND_DPA,), S.CLOSING),
    # I-Open  I-Peer-Disc  I-Disc  Closed
    (S.I_OPEN, E.I_PEER_DISC): ((A.I_DISC,), S.CLOSED),
    # I-Open  I-Rcv-CER  I-Snd-CEA  I-Open
    (S.I_OPEN, E.I_RCV_CER): ((A.I_SND_CEA,), S.I_OPEN),
    # I-Open  I-Rcv-CEA  Process-CEA  I-Open (as R-Open: only our own CER's Hop-by-Hop matches)
    (S.I_OPEN, E.I_RCV_CEA): ((A.PROCESS_CEA,), S.I_OPEN),
    # local: Closing  Rcv-Message  Process (answers only)  Closing. The RFC's Closing rows have
    # no Rcv-Message: a DPR was sent or answered, so a new request is discarded (the peer fails
    # it over when the transport closes, §5.5.4); answers to our own requests still count.
    (S.CLOSING, E.I_RCV_MESSAGE): ((A.PROCESS_ANSWER,), S.CLOSING),
    (S.CLOSING, E.R_RCV_MESSAGE): ((A.PROCESS_ANSWER,), S.CLOSING),
    # local: Closing  Rcv-DWR  Process-DWR, Snd-DWA  Closing (the peer may not have seen our DPR)
    (S.CLOSING, E.R_RCV_DWR): ((A.PROCESS_DWR, A.SND_DWA), S.CLOSING),
    (S.CLOSING, E.I_RCV_DWR): ((A.PROCESS_DWR, A.SND_DWA), S.CLOSING),
    # Closing  I-Rcv-DPA  I-Disc  Closed
    (S.CLOSING, E.I_RCV_DPA): ((A.I_DISC,), S.CLOSED),
    # Closing  R-Rcv-DPA  R-Disc  Closed
    (S.CLOSING, E.R_RCV_DPA): ((A.R_DISC,), S.CLOSED),
    # Closing  Timeout  Error  Closed
    (S.CLOSING, E.TIMEOUT): ((A.ERROR,), S.CLOSED),
    # Closing  I-Peer-Disc  I-Disc  Closed
    (S.CLOSING, E.I_PEER_DISC): ((A.I_DISC,), S.CLOSED),
    # Closing  R-Peer-Disc  R-Disc  Closed
    (S.CLOSING, E.R_PEER_DISC): ((A.R_DISC,), S.CLOSED),
}
del S, E, A

# Received messages by (role, is request, command code) -> event; other commands: *-Rcv-Message.
RECEIVE_EVENTS = {
    (Role.RESPONDER, True, CER): PeerEvent.R_RCV_CER,
    (Role.RESPONDER, False, CER): PeerEvent.R_RCV_CEA,
    (Role.RESPONDER, True, DWR): PeerEvent.R_RCV_DWR,
    (Role.RESPONDER, False, DWR): PeerEvent.R_RCV_DWA,
    (Role.RESPONDER, True, DPR): PeerEvent.R_RCV_DPR,
    (Role.RESPONDER, False, DPR): PeerEvent.R_RCV_DPA,
    (Role.INITIATOR, True, CER): PeerEvent.I_RCV_CER,
    (Role.INITIATOR, False, CER): PeerEvent.I_RCV_CEA,
    (Role.INITIATOR, True, DWR): PeerEvent.I_RCV_DWR,
    (Role.INITIATOR, False, DWR): PeerEvent.I_RCV_DWA,
    (Role.INITIATOR, True, DPR): PeerEvent.I_RCV_DPR,
    (Role.INITIATOR, False, DPR): PeerEvent.I_RCV_DPA,
}
RCV_MESSAGE = {Role.RESPONDER: PeerEvent.R_RCV_MESSAGE, Role.INITIATOR: PeerEvent.I_RCV_MESSAGE}
PEER_DISC = {Role.RESPONDER: PeerEvent.R_PEER_DISC, Role.INITIATOR: PeerEvent.I_PEER_DISC}
