"""Interop harness: a real gateway on loopback (port 0) and independent Diameter stacks run as
subprocesses against it (python-diameter, Erlang/OTP diameter, freeDiameter) or in-process (scapy).

Every subprocess is bounded by a timeout and killed past it; every stack-specific test skips with
the reason when its stack is not installed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.service import Gateway

# The gateway on port 0, shared with the end-to-end tests.
from tests.e2e.conftest import StartGateway, gateway_env, start_gateway  # noqa: F401

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
INTEROP_VENV = Path(os.environ.get("EIR_INTEROP_VENV", REPO / ".venv-interop"))
INTEROP_PYTHON = INTEROP_VENV / "bin" / "python"

WHITELISTED, BLACKLISTED, GREYLISTED = 0, 1, 2


def diameter_port(gateway: Gateway) -> int:
    transport, host, port = gateway.diameter_sockets[0]
    assert transport == "tcp" and host == "127.0.0.1"
    return port


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines a client script printed (optionally only one kind of event)."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                event = json.loads(line)
                if name is None or event.get("event") == name:
                    out.append(event)
        return out

    def explain(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-6000:]}"


async def run_process(
    argv: list[str], *, timeout: float, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Finished:
    """Run a subprocess without blocking the event loop that serves the gateway; kill its
    process group past ``timeout`` and fail the test."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        cwd=cwd,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        kill_group(process)
        stdout, stderr = await process.communicate()
        pytest.fail(
            f"{argv[0]} did not finish within {timeout} s\n--- stdout\n"
            f"{stdout.decode(errors='replace')[-4000:]}\n--- stderr\n"
            f"{stderr.decode(errors='replace')[-4000:]}"
        )
    assert process.returncode is not None
    return Finished(
        process.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace")
    )


def kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed ({why})")
    return path


async def make_pki(tmp_path: Path, name: str, identities: tuple[str, ...]) -> dict[str, Path]:
    """A CA and, for each Diameter identity, a certificate (CN and DNS SAN = the identity)."""
    openssl = require_tool("openssl", "certificates for the TLS interop test")
    out = {"ca": tmp_path / f"{name}-ca.pem", "ca.key": tmp_path / f"{name}-ca.key"}
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name} test CA", "-keyout", str(out["ca.key"]), "-out", str(out["ca"])],
    ]  # fmt: skip
    for identity in identities:
        key, csr, pem = (tmp_path / f"{name}-{identity}.{ext}" for ext in ("key", "csr", "pem"))
        ext = tmp_path / f"{name}-{identity}.ext"
        ext.write_text(
            f"subjectAltName=DNS:{identity}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
        )
        steps.append(
            [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={identity}",
             "-keyout", str(key), "-out", str(csr)]
        )  # fmt: skip
        steps.append(
            [openssl, "x509", "-req", "-in", str(csr), "-CA", str(out["ca"]), "-CAkey",
             str(out["ca.key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(pem)]
        )  # fmt: skip
        out[identity], out[f"{identity}.key"] = pem, key
    for argv in steps:
        done = await run_process(argv, timeout=20, cwd=tmp_path)
        assert done.returncode == 0, done.explain()
    return out


def tls_env(pki: dict[str, Path]) -> dict[str, str]:
    return {
        "EIR_DIAMETER_LISTEN": "tls://127.0.0.1:0",
        "EIR_DIAMETER_TLS_CERT": str(pki["eir.localdomain"]),
        "EIR_DIAMETER_TLS_KEY": str(pki["eir.localdomain.key"]),
        "EIR_DIAMETER_TLS_CA": str(pki["ca"]),
        "EIR_DIAMETER_TLS_VERIFY_CLIENT": "true",
    }
