"""Which OPC UA client applications (a PLC, a SCADA) may talk to the station: its trust list.

OPC UA checks two things. The session's user signs in with a station user's name and PIN
(app.line.opcua.security); the application proves itself with its certificate on the secure
channel. A PIN alone would let any program on the plant network that learned one drive the line,
so the encrypted endpoint also asks for a trusted application certificate:

    <data>/opcua/pki/trusted/certs/    certificates of the clients an admin trusts (DER or PEM)
    <data>/opcua/pki/rejected/certs/   certificates of the clients refused so far (DER)

(the folder layout of OPC 10000-12, as other OPC UA servers keep it). A client whose certificate is
not trusted is refused (BadCertificateUntrusted) and its certificate is kept in rejected/, where an
admin sees it (Settings, "OPC UA client certificates") and trusts it once; copying a PLC's certificate
file into trusted/ does the same. Both folders are read at each sign-in: a change counts at once,
without a restart. A certificate is identified by the SHA-256 of its DER bytes, never by its name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

log = logging.getLogger("line.opcua")

TRUSTED, REJECTED = Path("pki", "trusted", "certs"), Path("pki", "rejected", "certs")
REJECTED_KEPT_MAX = 200  # refused certificates kept for an admin: a client trying new ones cannot fill the disk
_SUFFIXES = (".der", ".crt", ".cer", ".pem")


def opcua_folder(db_path: Path) -> Path:
    """Where a station keeps its OPC UA server certificate and this trust list: beside its inspection log."""
    return Path(db_path).parent / "opcua"


class CertificateRefused(Exception):
    """A client's certificate may not open a session; `status` is the OPC UA status code's name, `certificate` the
    refused one as the list holds it (None when unreadable)."""

    def __init__(self, status: str, why: str, certificate: ClientCertificate | None = None):
        super().__init__(why)
        self.status = status
        self.certificate = certificate


@dataclass(frozen=True)
class ClientCertificate:
    """A client application's certificate as the trust list holds it."""

    fingerprint: str  # SHA-256 of the DER bytes, hex
    name: str  # the subject's common name (else the whole subject)
    application_uri: str  # from the subject alternative name ("" when it names none)
    not_after: datetime
    trusted: bool
    path: Path

    @property
    def expired(self) -> bool:
        return self.not_after < datetime.now(timezone.utc)

    def describe(self) -> str:
        uri = f" ({self.application_uri})" if self.application_uri else ""
        return f"{self.name}{uri}, SHA-256 {self.fingerprint[:16]}..., valid until {self.not_after:%Y-%m-%d}"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _read(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    return x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----BEGIN") else x509.load_der_x509_certificate(data)


def _describe(cert: x509.Certificate, trusted: bool, path: Path) -> ClientCertificate:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(names[0].value) if names else cert.subject.rfc4514_string() or "(no subject)"
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return ClientCertificate(fingerprint(cert.public_bytes(Encoding.DER)), name, uris[0] if uris else "",
                             cert.not_valid_after_utc, trusted, path)


class ClientTrustList:
    """The trust list in `folder` (the station's `<data>/opcua`); the folders are made when first needed."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.trusted_dir = self.folder / TRUSTED
        self.rejected_dir = self.folder / REJECTED

    def certificates(self) -> list[ClientCertificate]:
        """Every certificate of the list: the trusted ones, then the refused ones, each by name."""
        found = {}
        for trusted, folder in ((True, self.trusted_dir), (False, self.rejected_dir)):
            for path in sorted(folder.glob("*")) if folder.is_dir() else []:
                if path.suffix.lower() not in _SUFFIXES or not path.is_file():
                    continue
                try:
                    cert = _describe(_read(path), trusted, path)
                except (ValueError, OSError) as exc:
                    log.warning("OPC UA trust list: %s is not a certificate, ignored (%s)", path, exc)
                    continue
                found.setdefault(cert.fingerprint, cert)  # trusted wins over a copy left in rejected/
        return sorted(found.values(), key=lambda c: (not c.trusted, c.name.lower(), c.fingerprint))

    def check(self, der: bytes) -> ClientCertificate:
        """The client certificate `der` (the secure channel's) may open a session: its entry. CertificateRefused if
        not: unreadable, not (or no longer) valid, or not trusted (then it is kept in rejected/ for an admin)."""
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise CertificateRefused("BadCertificateInvalid", f"unreadable client certificate: {exc}") from exc
        digest = fingerprint(cert.public_bytes(Encoding.DER))  # as the list names it (also for an odd encoding)
        entry = next((c for c in self.certificates() if c.fingerprint == digest), None)
        if entry is None or not entry.trusted:
            entry = entry or self._keep_rejected(cert, der)
            raise CertificateRefused("BadCertificateUntrusted", f"client certificate {entry.describe()} is not trusted:"
                                     " an admin trusts it (File > OPC UA client certificates)", entry)
        now = datetime.now(timezone.utc)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise CertificateRefused("BadCertificateTimeInvalid", f"client certificate {entry.describe()} is not valid"
                                     f" now (valid from {cert.not_valid_before_utc:%Y-%m-%d})", entry)
        return entry

    def find(self, prefix: str) -> ClientCertificate:
        """The certificate whose SHA-256 starts with `prefix` (8 hex digits or more). KeyError if none or several."""
        prefix = prefix.strip().lower().replace(":", "")
        if len(prefix) < 8:
            raise KeyError(f"give at least 8 hex digits of the SHA-256, not {prefix!r}")
        found = [c for c in self.certificates() if c.fingerprint.startswith(prefix)]
        if len(found) != 1:
            raise KeyError(f"{len(found) or 'no'} client certificates with a SHA-256 starting {prefix} in {self.folder / 'pki'}")
        return found[0]

    def trust(self, digest: str) -> ClientCertificate:
        """Trust a refused certificate (moved from rejected/ to trusted/). KeyError if the list has none such."""
        return self._move(digest, to_trusted=True)

    def distrust(self, digest: str) -> ClientCertificate:
        """Stop trusting a certificate (moved back to rejected/, so it can be trusted again). KeyError if unknown."""
        return self._move(digest, to_trusted=False)

    def _move(self, digest: str, to_trusted: bool) -> ClientCertificate:
        entry = next((c for c in self.certificates() if c.fingerprint == digest), None)
        if entry is None:
            raise KeyError(f"no client certificate with SHA-256 {digest} in {self.folder / 'pki'}")
        if entry.trusted == to_trusted:
            return entry
        target = self.trusted_dir if to_trusted else self.rejected_dir
        target.mkdir(parents=True, exist_ok=True)
        dest = target / entry.path.name
        os.replace(entry.path, dest)
        for other in (self.rejected_dir if to_trusted else self.trusted_dir).glob("*"):  # no copy left behind
            try:
                if other.is_file() and fingerprint(_read(other).public_bytes(Encoding.DER)) == digest:
                    other.unlink()
            except (ValueError, OSError):
                continue
        return _describe(_read(dest), to_trusted, dest)

    def _keep_rejected(self, cert: x509.Certificate, der: bytes) -> ClientCertificate:
        entry = _describe(cert, False, Path())
        self.rejected_dir.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", entry.name)[:60] or "client"
        path = self.rejected_dir / f"{safe} [{entry.fingerprint[:16]}].der"
        if not path.exists() and sum(1 for _ in self.rejected_dir.iterdir()) >= REJECTED_KEPT_MAX:
            log.warning("OPC UA client certificate %s refused: not trusted (not kept: %s holds %d already)",
                        entry.describe(), self.rejected_dir, REJECTED_KEPT_MAX)
            return entry
        if not path.exists():
            temp = path.with_name(f".{path.name}.part")
            try:
                temp.write_bytes(der)
                os.replace(temp, path)
            except OSError as exc:  # a full disk must not turn a refusal into a failure of the server
                temp.unlink(missing_ok=True)
                log.warning("OPC UA client certificate %s refused: not trusted (not kept: %s)", entry.describe(), exc)
                return entry
            log.warning("OPC UA client certificate %s refused: not trusted (kept in %s)", entry.describe(), path)
        return _describe(cert, False, path)


def change_trust(trust: ClientTrustList, log_store: Any, digest: str, trusted: bool, user: str) -> ClientCertificate:
    """Trust (or stop trusting) a certificate and write the audit record (`log_store`: the station's InspectionStore)
    in one go: undone if it cannot be audited. The caller checks that `user` is an admin. KeyError if unknown."""
    with log_store.write() as tx:
        entry = trust.trust(digest) if trusted else trust.distrust(digest)
        try:
            tx.append_audit(user, "opcua.client_trusted" if trusted else "opcua.client_distrusted",
                            new={"certificate": entry.name, "application_uri": entry.application_uri,
                                 "sha256": entry.fingerprint, "valid_until": entry.not_after.isoformat()})
        except BaseException:  # not audited: not done
            if trusted:
                trust.distrust(digest)
            else:
                trust.trust(digest)
            raise
    log.info("OPC UA client certificate %s %s by %s", entry.describe(), "trusted" if trusted else "no longer trusted", user)
    return entry
