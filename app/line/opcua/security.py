"""Who may talk to the station over OPC UA: its certificate, its users, and which user makes each method call.

- The server certificate (RSA 2048, SHA-256, self-signed, 5 years) and its key are
  created on first start in the station's data folder (`<data>/opcua/`, key readable
  by the owner only) and reused afterwards, so a PLC trusts it once. A certificate
  that has expired or does not name the application URI is made anew (same key).
- Client applications need a trusted certificate on the encrypted endpoint
  (app.line.opcua.trust: the trust list in `<data>/opcua/pki/`), checked at each
  session's activation against the secure channel's own certificate.
- Users sign in with a station user's name and PIN (`UserDirectory.authenticate`:
  wrong PINs count towards the lock, as at the station). Anonymous sign-in exists
  only on the unsecured lab endpoint (`allow_anonymous`); on an encrypted channel it
  is refused.
- asyncua does not tell a method which session called it. `SessionAwareServer` makes
  its sessions set `CALLER` (a context variable) around each Call service, so the
  method handlers (coroutines, run in that same task) know the user.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate
from asyncua.crypto.permission_rules import User as UaUser
from asyncua.crypto.permission_rules import UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.line.opcua.trust import CertificateRefused, ClientTrustList
from app.users import PermissionDenied
from app.users import User as StationUser

log = logging.getLogger("line.opcua")

CERT_DAYS = 5 * 365
CERT_FILE, KEY_FILE = "server_cert.der", "server_key.pem"


def application_uri() -> str:
    return f"urn:{socket.gethostname()}:metal-inspection-station"


@dataclass(frozen=True)
class Certificate:
    cert_path: Path
    key_path: Path
    created: bool  # made now (first start, or the old one expired)


def ensure_certificate(folder: Path, app_uri: str, name: str) -> Certificate:
    """The server's certificate and key in `folder`, created when missing, expired or not naming `app_uri`."""
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / CERT_FILE, folder / KEY_FILE
    if key_path.is_file():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    else:
        key = generate_private_key()
        _write_private(key_path, dump_private_key_as_pem(key))
    if cert_path.is_file() and _usable(x509.load_der_x509_certificate(cert_path.read_bytes()), app_uri, key):
        return Certificate(cert_path, key_path, False)
    host = socket.gethostname()
    cert = generate_self_signed_app_certificate(
        key, name, {"organizationName": "metal-inspection-station"},
        [x509.UniformResourceIdentifier(app_uri), x509.DNSName(host)], extended=[ExtendedKeyUsageOID.SERVER_AUTH],
        days=CERT_DAYS)
    tmp = cert_path.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    os.replace(tmp, cert_path)
    log.info("OPC UA server certificate created: %s", cert_path)
    return Certificate(cert_path, key_path, True)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _usable(cert: x509.Certificate, app_uri: str, key) -> bool:
    now = datetime.now(timezone.utc)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        return False
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return app_uri in san.get_values_for_type(x509.UniformResourceIdentifier)


@dataclass
class LineUser(UaUser):
    """An OPC UA session's user: a station user, or the lab endpoint's anonymous user (`station_user` None)."""

    station_user: StationUser | None = None

    @property
    def audit_name(self) -> str:
        return self.station_user.name if self.station_user else "opcua (anonymous)"


CALLER: contextvars.ContextVar[LineUser | None] = contextvars.ContextVar("opcua_caller", default=None)


class StationUserManager:
    """asyncua's user manager: the client application's certificate against the trust list, then names and PINs
    against the station's users."""

    def __init__(self, station, allow_anonymous: bool, trust: ClientTrustList):
        self.station = station
        self.allow_anonymous = allow_anonymous
        self.trust = trust

    def get_user(self, iserver, username: str | None = None, password: str | None = None, certificate=None):
        if certificate:
            # The secure channel's certificate, not the one CreateSession names (asyncua checks only that one):
            # what proves which application is talking.
            try:
                self.station.note_opcua_client(self.trust.check(certificate), refused=False)
            except CertificateRefused as exc:
                log.warning("OPC UA sign-in refused: %s", exc)
                if exc.status == "BadCertificateUntrusted":
                    self.station.note_opcua_client(exc.certificate, refused=True)  # for the screen
                raise ServiceError(getattr(ua.StatusCodes, exc.status)) from exc
        if username is None:
            # `certificate` is the channel's peer certificate: empty only on the unsecured endpoint.
            if self.allow_anonymous and not certificate:
                return LineUser(role=UserRole.User, name="anonymous")
            return None
        users = self.station.users
        if users is None:
            log.warning("OPC UA sign-in of %r refused: the inspection log (and its users) is unavailable", username)
            return None
        try:
            user = users.authenticate(username, password or "")
        except PermissionDenied as exc:  # locked after too many wrong PINs
            log.warning("OPC UA sign-in refused: %s", exc)
            return None
        if user is None:
            log.warning("OPC UA sign-in of %r refused: unknown user or wrong PIN", username)
            return None
        return LineUser(role=UserRole.User, name=user.name, station_user=user)


class _Session(InternalSession):
    async def call(self, params: list[ua.CallMethodRequest]) -> list[ua.CallMethodResult]:
        token = CALLER.set(self.user if isinstance(self.user, LineUser) else None)
        try:
            return await super().call(params)
        finally:
            CALLER.reset(token)


class SessionAwareServer(InternalServer):
    """asyncua's internal server whose client sessions say who calls a method (`CALLER`)."""

    def create_session(self, name: str, user: UaUser | None = None, external: bool = False):
        return _Session(self, self.aspace, self.subscription_service, name, user=user or UaUser(role=UserRole.Anonymous),
                        external=external)
