"""The station as an OPC UA Machine Vision server (OPC 40100-1), tested with asyncua clients acting as the PLC.

Real peers on loopback: a Station with the real model on a live (generated) camera
and a real SQLite log, the server on a free port, clients over Basic256Sha256
Sign&Encrypt signed in with the station's users. One PLC runs in its own
interpreter (tests/opcua_plc.py), importing nothing of the station, so the
Machine Vision structures it uses are built from the server's type definitions.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.uaerrors import UaStatusCodeError
from conftest import REPO, FlakyCamera, wait_until
from opcua_plc import NO_PARAMETERS, PLC_URI, Plc, connect, result_json, trust_plc

from app.line.opcua.nodeset import completed_nodeset, nodeset_path
from app.line.opcua.trust import ClientTrustList
from app.line.opcua_mv import OpcUaError, OpcUaVisionServer
from app.recipes import Recipe
from app.settings import StationSettings
from app.sources import FrameSource
from app.station import Job, State, Station
from app.users import SETUP_USER
from app.verdict import ClassRule, VerdictRule
from synthetic import camera_frame

RULE = VerdictRule(default=ClassRule(0.3, 0.0))
ADMIN, ADMIN_PIN = "ada", "246810"
OPERATOR, OPERATOR_PIN = "otto", "135790"
JOBS = 200


class CyclingCamera(FrameSource):
    """A live camera showing scratched and clean parts in turn (small frames: an inspection takes tens of ms)."""

    name = "line camera"
    live = True

    def __init__(self, n: int = 6):
        self.frames = [camera_frame(i % 2 == 0, seed=i) for i in range(n)]
        self.i = 0

    def open(self) -> None:
        pass

    def read(self):
        time.sleep(0.02)
        self.i += 1
        return self.frames[self.i % len(self.frames)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Line:
    station: Station
    server: OpcUaVisionServer
    url: str
    folder: Path

    def session(self, user: str | None = ADMIN, pin: str | None = ADMIN_PIN, **kw):
        return connect(self.url, self.server.cert_path, self.folder / "plc", user, pin, **kw)


@pytest.fixture(scope="module")
def line(tmp_path_factory, detector):
    folder = tmp_path_factory.mktemp("opcua")
    settings = replace(StationSettings(), source="", data_dir=str(folder / "data"), rule=RULE, reconnect_seconds=0.2)
    station = Station(settings, config_path=folder / "station.json", detector=detector).start(open_configured_source=False)
    station.open_source(CyclingCamera())
    admin = station.users.add(ADMIN, "admin", ADMIN_PIN, SETUP_USER)
    station.users.add(OPERATOR, "operator", OPERATOR_PIN, admin)
    station.save_recipe(Recipe("cover", external_id="LINE-7", rule=RULE), admin)
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    trust_plc(folder / "plc", station.opcua_folder)  # the PLC's certificate, trusted as an admin would
    server = OpcUaVisionServer(station, url).start()
    yield Line(station, server, url, folder)
    server.stop()
    station.stop(drain=False, timeout=5)


async def refused(coro) -> str:
    try:
        await coro
    except UaStatusCodeError as exc:
        return ua.StatusCode(exc.code).name
    return "Good"


# -- the information model --------------------------------------------------------------------


def test_the_nodeset_is_the_official_one_and_its_id_types_get_their_inherited_fields():
    original = nodeset_path().read_text(encoding="utf-8")
    assert 'ModelUri="http://opcfoundation.org/UA/MachineVision" Version="1.0.0"' in original
    assert '<Definition Name="1:RecipeIdExternalDataType" />' in original  # the trap: an empty definition
    completed = completed_nodeset()
    for name in ("RecipeIdExternalDataType", "RecipeIdInternalDataType", "ConfigurationIdDataType"):
        definition = completed.split(f'<Definition Name="1:{name}">', 1)[1].split("</Definition>", 1)[0]
        assert [f.split('"', 1)[0] for f in definition.split('<Field Name="')[1:]] == [
            "Id", "Version", "Hash", "HashAlgorithm", "Description"]
    assert (nodeset_path().parent / "LICENSE.node-opcua-nodesets").is_file()


def test_a_bad_endpoint_is_refused_with_a_clear_message(line):
    for bad in ("tcp://host:4840", "opc.tcp://host", "opc.tcp://:4840", "opc.tcp://host:notaport"):
        with pytest.raises(ValueError, match="OPC UA endpoint"):
            OpcUaVisionServer(line.station, bad)


# -- a PLC in its own process -------------------------------------------------------------------


def test_a_plc_in_its_own_process_runs_200_jobs_and_every_result_matches_the_log(line, tmp_path):
    trust_plc(tmp_path, line.station.opcua_folder)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "opcua_plc.py"), line.url, str(line.server.cert_path),
                           str(tmp_path), ADMIN, ADMIN_PIN, "LINE-7", str(JOBS)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    took = time.monotonic() - t0
    # A plain client builds the structures from the server's definitions (the nodeset alone leaves these four unbuildable).
    assert {"ResultDataType", "RecipeIdExternalDataType", "RecipeIdInternalDataType", "ConfigurationIdDataType",
            "RecipeTransferOptions", "ConfigurationDataType"} <= set(out["types"])
    assert out["state_after_prepare"] == ["Operational", "Ready"]

    jobs = out["jobs"]
    assert len(set(jobs)) == JOBS
    results = out["results"]  # every ResultReady event, received on the Server object (HasNotifier)
    assert len(results) == JOBS and [r["job"] for r in results] == jobs
    rows = {r["uid"]: r for r in line.station.store.logged_after(0, 100_000)}
    verdicts = set()
    for i, (job, r) in enumerate(zip(jobs, results)):
        row = rows[r["uid"]]  # the ResultId is the log's uid
        assert (row["job_id"], row["part_id"], row["trigger"], row["operator"]) == (job, f"P-{i:04d}", "line", ADMIN)
        assert (r["part"], r["meas"], r["state"]) == (f"P-{i:04d}", f"M-{i:04d}", 1)
        verdict, failing, shown, regions, details = r["content"]
        assert verdict == row["verdict"] and regions == f"whole frame={row['verdict']}"
        assert failing == sum(d["fails"] for d in row["detections"]) and shown == sum(d["shown"] for d in row["detections"])
        assert len(json.loads(details)["defects"]) == sum(1 for d in row["detections"] if d["shown"] or d["fails"])
        assert (r["recipe"], r["recipe_version"], r["external_recipe"]) == ("cover", str(row["recipe_version"]), "LINE-7")
        assert r["config"] == row["model_id"] and r["processing_ms"] == pytest.approx(row["inference_ms"])
        assert r["created"] and r["start"] and r["type"] == "Event"
        verdicts.add(verdict)
    assert verdicts == {"PASS", "FAIL"}

    # AcquisitionDone (the part may move) before each ResultReady, then Ready; JobStarted first.
    for job in jobs:
        kinds = [e["kind"] for e in out["events"] if e["job"] == job]
        assert kinds == ["JobStarted", "AcquisitionDone", "ResultReady", "Ready"], kinds

    # ResultManagement, called with structure arguments from the plain client.
    first = results[0]
    assert out["by_id"]["type"] == "ResultDataType"
    assert {k: out["by_id"][k] for k in ("uid", "job", "meas", "part", "content", "recipe", "config")} == {
        k: first[k] for k in ("uid", "job", "meas", "part", "content", "recipe", "config")}
    assert out["release"] == 0
    assert out["components"] == {"state": 1, "part": first["part"], "job": first["job"], "content": first["content"]}
    log_uids = list(rows)
    assert out["by_part"] == {"complete": True, "count": 1, "uids": [results[1]["uid"]]}
    assert out["state_fail"]["uids"] == [u for u in log_uids if rows[u]["verdict"] == "FAIL"]
    assert out["state_pass"]["uids"] == [u for u in log_uids if rows[u]["verdict"] == "PASS"]
    assert out["state_completed"]["count"] == len(rows) and out["state_failed"]["count"] == 0
    assert out["by_job"] == [results[-1]["uid"]] and out["by_meas"] == [results[3]["uid"]]
    assert out["paged"] == {"complete": False, "count": len(rows), "uids": log_uids[20:30]}
    assert set(r["uid"] for r in results) <= set(out["by_time"]["uids"]) and out["by_time_future"] == 0
    assert out["recipes_prepared"] == [["cover", "1"]]

    audit = line.station.store.audit_records(action="line.opcua.StartSingleJob")
    assert len(audit) == JOBS and {a.user for a in audit} == {ADMIN}
    assert json.loads(audit[0].new_value)["status"] == "Good" and '"P-0000"' in audit[0].new_value
    rounds = sorted(out["round_trip_ms"])
    print(f"\n{JOBS} jobs in {took:.1f} s; StartSingleJob -> Ready median {rounds[len(rounds) // 2]:.0f} ms")


# -- the state machine, from an in-process PLC ---------------------------------------------------


def test_the_state_machine_walks_and_wrong_state_calls_get_the_spec_status_codes(line):
    async def scenario():
        async with line.session() as client:
            plc = await Plc(client).find()
            await plc.subscribe()  # on the Server object
            local = await Plc(client).find()
            await local.subscribe(node=local.system)  # on the vision system itself
            mv = plc.mv
            await plc.call(plc.sm, "Reset", 0, "")
            assert await plc.state() == ("Preoperational", None)
            state_id = await (await plc.sm.get_child(["0:CurrentState", "0:Id"])).read_value()
            assert state_id == (await plc.sm.get_child(f"{mv}:Preoperational")).nodeid  # the instance's own state

            recipe = (ua.RecipeIdExternalDataType(Id="LINE-7"), ua.RecipeIdInternalDataType(Id=""))
            assert await refused(plc.start_single_job("M", "P")) == "BadInvalidState"
            assert await refused(plc.call(plc.recipes, "PrepareRecipe", *recipe)) == "BadInvalidState"
            assert await refused(plc.call(plc.auto, "Stop", 0, "")) == "BadInvalidState"
            assert await refused(plc.call(plc.recipes, "UnprepareRecipe", *recipe)) == "BadInvalidState"

            await plc.call(plc.sm, "SelectModeAutomatic")
            assert await plc.state() == ("Operational", "Initialized")
            # The automatic mode's states exist on its type only: CurrentState/Id names the type's node.
            sub_id = await (await plc.auto.get_child(["0:CurrentState", "0:Id"])).read_value()
            assert sub_id == ua.NodeId(5056, mv)
            owner = await client.get_node(sub_id).get_referenced_nodes(ua.ObjectIds.HasComponent, ua.BrowseDirection.Inverse)
            assert [n.nodeid for n in owner] == [ua.NodeId(1021, mv)]  # VisionAutomaticModeStateMachineType
            number = await (await client.get_node(sub_id).get_child("0:StateNumber")).read_value()
            assert number > 0
            assert await refused(plc.call(plc.sm, "SelectModeAutomatic")) == "BadInvalidState"
            assert await refused(plc.start_single_job("M", "P")) == "BadInvalidState"
            assert await refused(plc.call(plc.recipes, "PrepareRecipe", ua.RecipeIdExternalDataType(Id="NOPE"),
                                          ua.RecipeIdInternalDataType(Id=""))) == "BadInvalidArgument"

            out = await plc.call(plc.recipes, "PrepareRecipe", *recipe)
            assert out[0].Id == "cover" and out[1] is True and line.station.recipe.name == "cover"
            assert await plc.state() == ("Operational", "Ready")
            assert (await plc.wait_for(lambda e: e.EventType == plc.type_id("RecipePrepared"))).InternalId.Id == "cover"
            assert await refused(plc.start_single_job("M", "P", recipe="OTHER")) == "BadInvalidArgument"
            assert await refused(plc.call(plc.auto, "StartSingleJob", ua.MeasIdDataType(Id="M"), ua.PartIdDataType(Id="P"),
                                          None, ua.ProductIdDataType(Id="some product"), NO_PARAMETERS)) == "BadInvalidArgument"
            assert await refused(plc.call(plc.auto, "StartSingleJob", ua.MeasIdDataType(Id="M"))) == "BadArgumentsMissing"
            assert await refused(plc.call(plc.auto, "StartSingleJob", "M", "P", None, None, NO_PARAMETERS)) == "BadTypeMismatch"
            info = await plc.wait_for(lambda e: e.EventType == plc.type_id("VisionInformation")
                                      and "StartSingleJob" in e.Message.Text and "BadTypeMismatch" in e.Message.Text)
            assert ADMIN in info.Message.Text

            # Continuous execution: results keep coming with the run's JobId until Stop.
            job = (await plc.call(plc.auto, "StartContinuous", ua.MeasIdDataType(Id="RUN"), ua.PartIdDataType(Id=""),
                                  ua.RecipeIdExternalDataType(Id="LINE-7"), None, NO_PARAMETERS))[0].Id
            assert await plc.state() == ("Operational", "ContinuousExecution")
            system = await (await plc.system.get_child(f"{mv}:SystemState")).read_value()
            assert system.State == ua.SystemStateDataType.PRD_1
            assert await refused(plc.start_single_job("M", "P")) == "BadInvalidState"
            for _ in range(60):
                if len([e for e in plc.of("ResultReady") if e.JobId.Id == job]) >= 3:
                    break
                await asyncio.sleep(0.1)
            assert len([e for e in plc.of("ResultReady") if e.JobId.Id == job]) >= 3
            await plc.call(plc.auto, "Stop", 0, "enough")
            assert await plc.state() == ("Operational", "Ready") and not line.station.continuous
            await plc.wait_for(lambda e: e.EventType == plc.type_id("Ready") and e.JobId.Id == job)
            job = (await plc.call(plc.auto, "StartContinuous", None, None, None, None, NO_PARAMETERS))[0].Id
            await plc.call(plc.auto, "Abort", 0, "jam")
            assert await plc.state() == ("Operational", "Ready") and not line.station.continuous
            aborted = await plc.wait_for(lambda e: e.EventType == plc.type_id("StateChanged")
                                         and e.Transition.Text == "ContinuousExecutionToReadyAbort")
            assert getattr(aborted, "Transition/Id") == ua.NodeId(5072, mv)

            await plc.call(plc.recipes, "UnprepareRecipe", *recipe)
            assert await plc.state() == ("Operational", "Initialized")
            line.station.set_engineering(True, ADMIN)
            try:
                assert await wait_for_value(plc, "SystemState", lambda v: v.State == ua.SystemStateDataType.ENG_3)
            finally:
                line.station.set_engineering(False, ADMIN)
            assert await wait_for_value(plc, "SystemState", lambda v: v.State == ua.SystemStateDataType.SBY_2)

            await plc.call(plc.sm, "Halt", 0, "shift end")
            assert await plc.state() == ("Halted", None)
            system = await (await plc.system.get_child(f"{mv}:SystemState")).read_value()
            assert system.State == ua.SystemStateDataType.SDT_4
            assert await refused(plc.call(plc.sm, "SelectModeAutomatic")) == "BadInvalidState"
            assert await refused(plc.call(plc.sm, "Halt", 0, "")) == "BadInvalidState"
            await plc.call(plc.sm, "Reset", 0, "")
            assert await plc.state() == ("Preoperational", None)

            changes = [(e.FromState.Text, e.ToState.Text) for e in plc.of("StateChanged")]
            for step in [("Preoperational", "Initialized"), ("Initialized", "Ready"), ("Ready", "ContinuousExecution"),
                         ("ContinuousExecution", "Ready"), ("Ready", "Initialized"), ("Operational", "Halted"),
                         ("Halted", "Preoperational")]:
                assert step in changes, step
            halted = next(e for e in plc.of("StateChanged") if e.ToState.Text == "Halted")
            assert halted.Transition.Text == "OperationalToHalted"
            assert getattr(halted, "Transition/Id") == ua.NodeId(5049, mv)  # the type's transition node
            assert [e.EventId for e in local.of("StateChanged")] == [e.EventId for e in plc.of("StateChanged")]

    asyncio.run(scenario())


async def wait_for_value(plc: Plc, name: str, predicate, timeout: float = 10.0) -> bool:
    node = await plc.system.get_child(f"{plc.mv}:{name}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate(await node.read_value()):
            return True
        await asyncio.sleep(0.05)
    return False


def test_a_camera_that_dies_drives_error_with_an_error_event_and_reset_recovers(line):
    async def scenario():
        async with line.session() as client:
            plc = await Plc(client).find()
            await plc.subscribe()
            # delivers until the test kills it, then 40 reconnects fail (~8 s); the line starts once it delivers
            camera = FlakyCamera(frames=10**9, failed_opens=40)
            await asyncio.to_thread(line.station.open_source, camera)
            assert await asyncio.to_thread(wait_until, lambda: line.station.state == State.READY, 20)
            await plc.call(plc.sm, "Reset", 0, "")
            await plc.call(plc.sm, "SelectModeAutomatic")
            await plc.call(plc.recipes, "PrepareRecipe", ua.RecipeIdExternalDataType(Id="LINE-7"), None)
            assert camera.opens == 1 and await plc.state() == ("Operational", "Ready")
            mark = len(plc.events)  # (switching the source was a moment without frames: an Error already)
            camera.frames = 0  # dies now, after the mark however slow the machine is (its next read fails)
            error = await plc.wait_for(lambda e: e.EventType == plc.type_id("Error"), timeout=30, since=mark)
            assert "flaky camera" in error.Message.Text and error.Severity >= 601
            assert error.FromState.Text == "Operational" and error.ToState.Text == "Error"
            assert await plc.state() == ("Error", None)
            system = await (await plc.system.get_child(f"{plc.mv}:SystemState")).read_value()
            assert system.State == ua.SystemStateDataType.UDT_5
            assert await refused(plc.start_single_job("M", "P")) == "BadInvalidState"
            # Reset while the camera is still gone: Preoperational, then straight back to Error.
            await plc.call(plc.sm, "Reset", 0, "")
            assert await plc.state() == ("Error", None)
            assert ("Preoperational", "Error") in [(e.FromState.Text, e.ToState.Text) for _, e in plc.events[mark:]
                                                   if e.EventType == plc.type_id("StateChanged")]
            assert await asyncio.to_thread(wait_until, lambda: line.station.state == State.READY, 60)
            assert await plc.state() == ("Error", None)  # the error stays until the PLC resets
            await plc.call(plc.sm, "Reset", 0, "camera fixed")
            assert await plc.state() == ("Preoperational", None)
            await plc.call(plc.sm, "SelectModeAutomatic")
            await plc.call(plc.recipes, "PrepareRecipe", ua.RecipeIdExternalDataType(Id="LINE-7"), None)
            job = await plc.start_single_job("M-after", "P-after")
            result = await plc.wait_for(lambda e: e.EventType == plc.type_id("ResultReady") and e.JobId.Id == job)
            assert result.PartId.Id == "P-after" and result.ResultState == 1

    try:
        asyncio.run(scenario())
    finally:
        line.station.open_source(CyclingCamera())


# -- security -----------------------------------------------------------------------------------


def test_only_signed_in_users_on_the_encrypted_endpoint_and_each_role_may_do_its_part(line):
    async def scenario():
        # no user: an anonymous token on the encrypted endpoint
        assert await refused(line.session(None, None).__aenter__()) in ("BadIdentityTokenRejected", "BadUserAccessDenied")
        assert await refused(line.session(ADMIN, "000000").__aenter__()) == "BadUserAccessDenied"
        # the only endpoint: Basic256Sha256 Sign&Encrypt with user name and PIN (no unsecured one, no anonymous token)
        endpoints = await Client(line.url).connect_and_get_server_endpoints()
        assert {(e.SecurityPolicyUri, e.SecurityMode) for e in endpoints} == {
            (SecurityPolicyBasic256Sha256.URI, ua.MessageSecurityMode.SignAndEncrypt)}
        assert {t.TokenType for e in endpoints for t in e.UserIdentityTokens} == {ua.UserTokenType.UserName}
        with pytest.raises(ua.UaError, match="No matching endpoints"):
            async with line.session(None, None, secure=False, timeout=10):
                pass
        async with line.session() as admin:
            plc = await Plc(admin).find()
            await plc.call(plc.sm, "Reset", 0, "")
            await plc.call(plc.sm, "SelectModeAutomatic")
        async with line.session(OPERATOR, OPERATOR_PIN) as operator:
            plc = await Plc(operator).find()
            recipe = (ua.RecipeIdExternalDataType(Id="LINE-7"), None)
            assert await refused(plc.call(plc.recipes, "PrepareRecipe", *recipe)) == "BadUserAccessDenied"
        async with line.session() as admin:
            plc = await Plc(admin).find()
            await plc.call(plc.recipes, "PrepareRecipe", *recipe)
        async with line.session(OPERATOR, OPERATOR_PIN) as operator:
            plc = await Plc(operator).find()
            await plc.subscribe()
            job = await plc.start_single_job("M-otto", "P-otto")
            await plc.wait_for(lambda e: e.EventType == plc.type_id("ResultReady") and e.JobId.Id == job)
        return job

    job = asyncio.run(scenario())
    store = line.station.store
    refused_prepare = [a for a in store.audit_records(action="line.opcua.PrepareRecipe") if a.user == OPERATOR]
    assert refused_prepare and json.loads(refused_prepare[-1].new_value)["status"] == "BadUserAccessDenied"
    started = [a for a in store.audit_records(action="line.opcua.StartSingleJob") if a.user == OPERATOR]
    assert started and '"P-otto"' in started[-1].new_value
    row = next(r for r in store.logged_after(0, 100_000) if r["job_id"] == job)
    assert row["operator"] == OPERATOR
    assert [a.user for a in store.audit_records(action="user.signin_failed")] == [ADMIN]  # the wrong PIN counts
    cert_dir = line.station.db_path.parent / "opcua"
    assert line.server.cert_path == cert_dir / "server_cert.der"
    assert stat.S_IMODE((cert_dir / "server_key.pem").stat().st_mode) == 0o600
    assert not line.server.insecure and line.server.warning == ""


def test_the_lab_endpoint_lets_anonymous_clients_in_says_so_and_reuses_the_certificate(line, tmp_path):
    url = f"opc.tcp://127.0.0.1:{free_port()}"
    cert_before = line.server.cert_path.read_bytes()
    lab = OpcUaVisionServer(line.station, url, allow_anonymous=True, cert_dir=line.server.cert_path.parent).start()
    try:
        assert lab.insecure and "UNSECURED" in lab.warning and url in lab.warning
        assert lab.cert_path.read_bytes() == cert_before  # created once, reused at the next start

        async def scenario():
            async with connect(url, None, tmp_path, secure=False) as client:  # no encryption, no user
                plc = await Plc(client).find()
                await plc.call(plc.sm, "Reset", 0, "")
                await plc.call(plc.sm, "SelectModeAutomatic")
                assert await plc.state() == ("Operational", "Initialized")
                await plc.call(plc.sm, "Reset", 0, "")
            # anonymous on the encrypted endpoint of the same server, from a trusted application: refused
            assert await refused(connect(url, lab.cert_path, tmp_path).__aenter__()) == "BadUserAccessDenied"

        trust_plc(tmp_path, line.station.opcua_folder)
        asyncio.run(scenario())
    finally:
        lab.stop()
    records = [a for a in line.station.store.audit_records(action="line.opcua.SelectModeAutomatic")
               if a.user == "opcua (anonymous)"]
    assert records


def test_only_client_applications_an_admin_trusts_may_sign_in(line, tmp_path):
    """A SCADA with a certificate of its own is refused before any PIN is checked; its certificate waits for an admin,
    who trusts it (then it signs in) and later stops trusting it (refused again)."""
    scada = tmp_path / "scada"

    async def sign_in() -> str:
        try:
            async with connect(line.url, line.server.cert_path, scada, OPERATOR, OPERATOR_PIN) as client:
                await Plc(client).find()  # browsing needs an activated session
                return "Good"
        except UaStatusCodeError as exc:
            return ua.StatusCode(exc.code).name

    assert asyncio.run(sign_in()) == "BadCertificateUntrusted"
    assert [w for w in line.station.warnings() if f"OPC UA: {PLC_URI} refused, certificate not trusted" in w]
    der = (scada / "plc_cert.der").read_bytes()
    (waiting,) = [c for c in line.station.opcua_clients() if not c.trusted]
    assert waiting.fingerprint == hashlib.sha256(der).hexdigest() and waiting.application_uri == PLC_URI
    admin = line.station.users.authenticate(ADMIN, ADMIN_PIN)
    line.station.set_opcua_client_trusted(waiting.fingerprint, True, admin)
    assert not [w for w in line.station.warnings() if "OPC UA" in w]  # trusted now: nothing to say
    assert asyncio.run(sign_in()) == "Good"
    line.station.set_opcua_client_trusted(waiting.fingerprint, False, admin)
    assert asyncio.run(sign_in()) == "BadCertificateUntrusted"
    refused_said = [w for w in line.station.warnings() if "OPC UA" in w]
    assert refused_said
    ClientTrustList(line.station.opcua_folder).trust(waiting.fingerprint)  # as `opcua-clients trust` does, elsewhere
    assert [w for w in line.station.warnings() if "OPC UA" in w] == refused_said  # said until the client gets in
    assert asyncio.run(sign_in()) == "Good"
    assert not [w for w in line.station.warnings() if "OPC UA" in w]
    assert line.station.users.authenticate(OPERATOR, OPERATOR_PIN) is not None  # no PIN was counted as wrong
    trusted = [a for a in line.station.store.audit_records() if a.action.startswith("opcua.client_")]
    assert [a.action for a in trusted][-2:] == ["opcua.client_trusted", "opcua.client_distrusted"]


def test_a_port_in_use_is_said_at_start(line):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OpcUaError, match="OPC UA server not started"):
            OpcUaVisionServer(line.station, f"opc.tcp://127.0.0.1:{port}").start()


def test_any_logged_result_is_found_by_its_id_and_an_unknown_one_is_not(line):
    """GetResultById reads the inspection log by uid: also results this server never announced."""
    frame = line.station.feed.latest()
    assert frame is not None
    logged = line.station.inspect_frame(frame, Job("line", job_id="offline-1"))  # not through the server
    assert logged.inspection_id is not None

    async def scenario():
        async with line.session() as client:
            await client.load_data_type_definitions()
            plc = await Plc(client).find()
            found = await plc.call(plc.results, "GetResultById", ua.ResultIdDataType(Id=logged.uid), 0)
            missing = await refused(plc.call(plc.results, "GetResultById", ua.ResultIdDataType(Id="f" * 32), 0))
            return result_json(found[1]), missing

    found, missing = asyncio.run(scenario())
    assert found["uid"] == logged.uid and missing == "BadNotFound"
