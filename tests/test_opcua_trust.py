"""The OPC UA trust list of client applications (app.line.opcua.trust): refused certificates wait for an admin, who
trusts them in the window (audited); a refused, expired or unreadable certificate never opens a session. The same
list over the wire, with a real asyncua client: tests/test_opcua_mv.py."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from app.line.opcua.trust import CertificateRefused, ClientTrustList, fingerprint
from app.settings import StationSettings
from app.station import Station
from app.users import SETUP_USER, PermissionDenied

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(name: str, uri: str, *, days: float = 365, start_days: float = -1) -> x509.Certificate:
    """A self-signed application certificate, as a PLC makes its own."""
    now = datetime.now(timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(KEY.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now + timedelta(days=start_days))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), critical=False)
            .sign(KEY, hashes.SHA256()))


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def refused(trust: ClientTrustList, data: bytes) -> str:
    with pytest.raises(CertificateRefused) as caught:
        trust.check(data)
    return caught.value.status


def test_a_refused_client_waits_in_rejected_until_it_is_trusted(tmp_path):
    trust = ClientTrustList(tmp_path / "opcua")
    plc = der(certificate("Line 7 PLC", "urn:plc7:s7"))
    assert trust.certificates() == []
    assert refused(trust, plc) == "BadCertificateUntrusted"
    assert refused(trust, plc) == "BadCertificateUntrusted"  # a second try keeps one copy
    (entry,) = trust.certificates()
    assert (entry.name, entry.application_uri, entry.trusted) == ("Line 7 PLC", "urn:plc7:s7", False)
    assert entry.fingerprint == fingerprint(plc) and entry.path.parent == tmp_path / "opcua" / "pki" / "rejected" / "certs"
    assert entry.path.read_bytes() == plc

    assert trust.trust(entry.fingerprint).trusted
    assert trust.check(plc).name == "Line 7 PLC"  # trusted: no error
    assert [p.parent.parent.name for p in (tmp_path / "opcua" / "pki").rglob("*.der")] == ["trusted"]
    trust.distrust(entry.fingerprint)
    assert refused(trust, plc) == "BadCertificateUntrusted"
    with pytest.raises(KeyError, match="no client certificate"):
        trust.trust("0" * 64)


def test_a_file_dropped_into_trusted_counts_at_once_pem_or_der_and_the_name_means_nothing(tmp_path):
    trust = ClientTrustList(tmp_path)
    scada, impostor = certificate("SCADA", "urn:scada"), certificate("SCADA", "urn:scada")  # the same name, another certificate
    trust.trusted_dir.mkdir(parents=True)
    (trust.trusted_dir / "scada.pem").write_bytes(scada.public_bytes(Encoding.PEM))
    (trust.trusted_dir / "notes.der").write_bytes(b"not a certificate")  # ignored, never trusted
    assert trust.check(der(scada)).trusted
    assert refused(trust, der(impostor)) == "BadCertificateUntrusted"  # another certificate under the same name
    assert [(c.name, c.trusted) for c in trust.certificates()] == [("SCADA", True), ("SCADA", False)]
    assert refused(trust, b"\x30\x03garbage") == "BadCertificateInvalid"


def test_an_expired_or_not_yet_valid_certificate_is_refused_even_when_trusted(tmp_path):
    trust = ClientTrustList(tmp_path)
    trust.trusted_dir.mkdir(parents=True)
    expired = certificate("old PLC", "urn:old", days=-1, start_days=-400)
    early = certificate("new PLC", "urn:new", days=400, start_days=2)
    for i, cert in enumerate((expired, early)):
        (trust.trusted_dir / f"{i}.der").write_bytes(der(cert))
    assert refused(trust, der(expired)) == "BadCertificateTimeInvalid"
    assert refused(trust, der(early)) == "BadCertificateTimeInvalid"
    assert [c.expired for c in trust.certificates()] == [False, True]  # by name: "new PLC", "old PLC"


def test_refused_certificates_kept_for_an_admin_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr("app.line.opcua.trust.REJECTED_KEPT_MAX", 2)
    trust = ClientTrustList(tmp_path)
    for i in range(3):  # a client trying certificate after certificate
        assert refused(trust, der(certificate(f"probe {i}", "urn:probe"))) == "BadCertificateUntrusted"
    assert [c.name for c in trust.certificates()] == ["probe 0", "probe 1"]


@pytest.fixture
def station(tmp_path, detector):
    settings = replace(StationSettings(), source="", data_dir=str(tmp_path / "data"))
    station = Station(settings, config_path=tmp_path / "station.json", detector=detector).start(open_configured_source=False)
    yield station
    station.stop(drain=False, timeout=5)


def test_only_an_admin_trusts_a_client_and_each_decision_is_audited(station):
    admin = station.users.add("root", "admin", "246810", SETUP_USER)
    operator = station.users.add("olga", "operator", "135790", admin)
    plc = der(certificate("Line 7 PLC", "urn:plc7:s7"))
    trust = ClientTrustList(station.opcua_folder)
    assert refused(trust, plc) == "BadCertificateUntrusted"
    (entry,) = station.opcua_clients()
    with pytest.raises(PermissionDenied):
        station.set_opcua_client_trusted(entry.fingerprint, True, operator)
    assert not station.opcua_clients()[0].trusted and station.store.audit_records(action="opcua.client_trusted") == []

    station.set_opcua_client_trusted(entry.fingerprint, True, admin)
    assert trust.check(plc).trusted
    station.set_opcua_client_trusted(entry.fingerprint, False, admin)
    assert refused(trust, plc) == "BadCertificateUntrusted"
    records = [a for a in station.store.audit_records() if a.action.startswith("opcua.")]
    assert [(a.user, a.action) for a in records] == [("root", "opcua.client_trusted"), ("root", "opcua.client_distrusted")]
    assert entry.fingerprint in records[0].new_value and "urn:plc7:s7" in records[0].new_value


def test_the_window_dialog_lists_refused_clients_and_trusts_the_selected_one(qtbot, station):
    from app.ui.opcua_clients_dialog import OpcUaClientsDialog

    admin = station.users.add("root", "admin", "246810", SETUP_USER)
    dlg = OpcUaClientsDialog(station, admin)
    qtbot.addWidget(dlg)
    assert dlg.table.rowCount() == 0 and "No client" in dlg.message.text()
    plc = der(certificate("Line 7 PLC", "urn:plc7:s7"))
    refused(ClientTrustList(station.opcua_folder), plc)  # the PLC tried to connect
    dlg.trust_button.click()
    assert "Select one" in dlg.message.text()
    dlg.refresh_button.click()
    assert [dlg.table.item(0, c).text() for c in (0, 1, 3)] == ["Line 7 PLC", "refused", "urn:plc7:s7"]
    assert dlg.table.item(0, 4).text() == fingerprint(plc)
    dlg.table.selectRow(0)
    dlg.trust_button.click()
    assert dlg.table.item(0, 1).text() == "trusted" and "now trusted" in dlg.message.text()
    assert ClientTrustList(station.opcua_folder).check(plc).trusted
    dlg.table.selectRow(0)
    dlg.distrust_button.click()
    assert dlg.table.item(0, 1).text() == "refused"
    assert [a.action for a in station.store.audit_records() if a.action.startswith("opcua.")] == [
        "opcua.client_trusted", "opcua.client_distrusted"]


def test_the_command_line_lists_and_trusts_for_a_station_without_a_window(tmp_path, monkeypatch, capsys):
    import io

    from app.cli import main
    from app.store import InspectionStore
    from app.users import UserDirectory

    db = tmp_path / "data" / "inspections.sqlite"
    with InspectionStore(db) as store:
        admin = UserDirectory(store).add("root", "admin", "246810", SETUP_USER)
        UserDirectory(store).add("olga", "operator", "135790", admin)
    plc = der(certificate("Line 7 PLC", "urn:plc7:s7"))
    refused(ClientTrustList(tmp_path / "data" / "opcua"), plc)
    digest = fingerprint(plc)
    base = ["opcua-clients", "--db", str(db), "--config", str(tmp_path / "none.json")]

    assert main([*base, "list"]) == 0
    assert capsys.readouterr().out.split("\t")[:3] == [digest, "refused", "Line 7 PLC"]
    status = ["status", "--db", str(db), "--config", str(tmp_path / "none.json")]
    assert main(status) == 1  # the station is not running
    assert "OPC UA clients refused, certificate not trusted: Line 7 PLC" in capsys.readouterr().out
    for signer, pin, prefix, why in (("olga", "135790", digest[:10], "may not"), ("root", "999999", digest[:10], "wrong"),
                                     ("root", "246810", digest[:4], "at least 8")):
        monkeypatch.setattr("sys.stdin", io.StringIO(pin + "\n"))
        assert main([*base, "trust", prefix, "--as", signer, "--pin-stdin"]) == 2
        assert why in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("246810\n"))
    assert main([*base, "trust", digest[:10], "--as", "root", "--pin-stdin"]) == 0
    assert "now trusted" in capsys.readouterr().out
    assert ClientTrustList(tmp_path / "data" / "opcua").check(plc).trusted
    main(status)
    assert "OPC UA" not in capsys.readouterr().out  # trusted: nothing waits for an admin
    with InspectionStore(db) as store:
        assert [a.user for a in store.audit_records(action="opcua.client_trusted")] == ["root"]
