"""The seed corpus: the golden wire vectors of tests/diameter/vectors.py (well-formed and
malformed), and ME-Identity-Check-Requests aimed at the embedded default configuration (realm
``localdomain``) so that mutations start from inputs that reach the S13 handler: each outcome of
the default lists and TAC file, Software-Version, User-Name, Proxy-Info, OC-Supported-Features
(RFC 7683), and a stream of several
messages (ECR, DWR, a second CER, DPR) as one read."""

from __future__ import annotations

from pathlib import Path

from diameter.codec import FLAG_PROXIABLE, FLAG_REQUEST, Avp, Message
from tests.diameter import vectors

S13_APPLICATION_ID = 16777252
TGPP = 10415
MME_HOST = "mme.fuzz.test"


def micr(imei: str | None, n: int, *, sv: str | None = None, imsi: str | None = None,
         proxy: bool = False, doic: bool = False) -> bytes:
    message = Message(324, S13_APPLICATION_ID, FLAG_REQUEST | FLAG_PROXIABLE, n, n)
    message.add("Session-Id", f"{MME_HOST};1;{n}")
    message.add(
        "Vendor-Specific-Application-Id",
        [Avp.new("Vendor-Id", TGPP), Avp.new("Auth-Application-Id", S13_APPLICATION_ID)],
    )
    message.add("Auth-Session-State", 1).add("Origin-Host", MME_HOST)
    message.add("Origin-Realm", "fuzz.test").add("Destination-Realm", "localdomain")
    terminal = [] if imei is None else [Avp.new("IMEI", imei)]
    if sv is not None:
        terminal.append(Avp.new("Software-Version", sv))
    message.add("Terminal-Information", terminal)
    if imsi is not None:
        message.add("User-Name", imsi)
    if proxy:
        message.add("Proxy-Info", [Avp.new("Proxy-Host", "dra.fuzz.test"),
                                   Avp.new("Proxy-State", b"\x00state")])
    if doic:  # RFC 7683 §5.1: a reacting node offering the loss algorithm
        message.add("OC-Supported-Features", [Avp.new("OC-Feature-Vector", 1)])
    return message.encode()


def base(code: int, n: int, *extra: Avp) -> bytes:
    message = Message(code, 0, FLAG_REQUEST, n, n)
    message.add("Origin-Host", MME_HOST).add("Origin-Realm", "fuzz.test")
    message.avps.extend(extra)
    return message.encode()


def seeds() -> dict[str, bytes]:
    out = {f"vector-{name.lower()}": value for name, value in vars(vectors).items()
           if name.isupper() and isinstance(value, bytes)}
    out.update({
        "micr-white": micr("35209900123456", 1),  # on the default whitelist
        "micr-black": micr("35693803564380", 2, sv="01"),  # on the default blacklist
        "micr-unknown-tac": micr("86000001123456", 3, imsi="001010123456789"),
        "micr-check-digit": micr("353320119001235", 4, sv="77", proxy=True),
        "micr-no-imei": micr(None, 5),
        "micr-bad-sv": micr("35209900123456", 6, sv="1x"),
        "micr-doic": micr("35209900123456", 12, doic=True),
        "stream": b"".join((
            micr("35111111123456", 7, imsi="00101999"),
            base(280, 8),
            vectors.CER,
            micr("35209900123456", 9),
            base(282, 10, Avp.new("Disconnect-Cause", 0)),
            micr("35209900123456", 11),
        )),
    })
    return out


def write(directory: Path) -> int:
    """Write the seeds into ``directory`` (a libFuzzer corpus); returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    corpus = seeds()
    for name, data in corpus.items():
        (directory / name).write_bytes(data)
    return len(corpus)
