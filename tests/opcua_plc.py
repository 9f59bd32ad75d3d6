"""A PLC written with nothing but asyncua, for the OPC UA Machine Vision tests (tests/test_opcua_mv.py).

`connect()` opens an encrypted, signed-in session the way a plant PLC would.
Run as a script it is a PLC in its own interpreter: nothing of the station is
imported, so the Machine Vision types it uses are the ones it builds from the
server's own type definitions (`load_data_type_definitions`), and its events are
subscribed on the Server object only. It prints what it saw as JSON:

    python tests/opcua_plc.py URL SERVER_CERT CLIENT_DIR USER PIN RECIPE_EXTERNAL_ID JOBS
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

MV_URI = "http://opcfoundation.org/UA/MachineVision"
VISION_SYSTEM_TYPE = 1003
EVENT_TYPES = {"ResultReady": 1024, "AcquisitionDone": 1025, "Error": 1019, "StateChanged": 1018, "JobStarted": 1013,
               "Ready": 1023, "RecipePrepared": 1022, "VisionInformation": 1038}
NO_PARAMETERS = ua.Variant([], ua.VariantType.Variant)


PLC_URI = "urn:test-plc:opcua-client"


def plc_certificate(client_dir: Path) -> Path:
    """The PLC's certificate file, made now if missing (as `connect()` would make it): what a station's admin trusts."""
    async def make() -> Path:
        client = Client("opc.tcp://127.0.0.1:4840")
        client.application_uri = PLC_URI
        cert, _ = await client.setup_self_signed_certificate(client_dir / "plc_key.pem", client_dir / "plc_cert.der")
        return cert

    return asyncio.run(make())


def trust_plc(client_dir: Path, station_opcua: Path) -> Path:
    """Put the PLC's certificate into the station's trust list (`<data>/opcua`), as an admin may copy it there."""
    folder = station_opcua / "pki" / "trusted" / "certs"
    folder.mkdir(parents=True, exist_ok=True)
    der = plc_certificate(client_dir).read_bytes()
    target = folder / f"test-plc-{hashlib.sha256(der).hexdigest()[:12]}.der"
    target.write_bytes(der)
    return target


@asynccontextmanager
async def connect(url: str, server_cert: Path | None, client_dir: Path, user: str | None = None, pin: str | None = None,
                  secure: bool = True, timeout: float = 30.0):
    """A session: Basic256Sha256 Sign&Encrypt with a client certificate of its own (made once in `client_dir`)."""
    client = Client(url, timeout=timeout)
    client.application_uri = PLC_URI
    if secure:
        cert, key = await client.setup_self_signed_certificate(client_dir / "plc_key.pem", client_dir / "plc_cert.der")
        await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                                  server_certificate=str(server_cert) if server_cert else None,
                                  mode=ua.MessageSecurityMode.SignAndEncrypt)
    if user is not None:
        client.set_user(user)
        client.set_password(pin or "")
    async with client:
        yield client


class Plc:
    """The Machine Vision nodes of one server as a PLC finds them: the vision system by its type, not by a name."""

    def __init__(self, client: Client):
        self.client = client
        self.events: list = []
        self.arrived = asyncio.Event()  # set at each event: waiting costs no polling (the station shares the CPUs)

    async def find(self) -> Plc:
        self.mv = await self.client.get_namespace_index(MV_URI)
        wanted = ua.NodeId(VISION_SYSTEM_TYPE, self.mv)
        systems = [n for n in await self.client.nodes.objects.get_children() if await n.read_type_definition() == wanted]
        assert len(systems) == 1, f"expected one VisionSystemType instance, found {len(systems)}"
        self.system = systems[0]
        self.sm = await self.system.get_child(f"{self.mv}:VisionStateMachine")
        self.auto = await self.sm.get_child(f"{self.mv}:AutomaticModeStateMachine")
        self.recipes = await self.system.get_child(f"{self.mv}:RecipeManagement")
        self.results = await self.system.get_child(f"{self.mv}:ResultManagement")
        return self

    def type_id(self, kind: str) -> ua.NodeId:
        return ua.NodeId(EVENT_TYPES[kind], self.mv)

    async def subscribe(self, kinds=tuple(EVENT_TYPES), node=None) -> None:
        """Machine Vision events of these kinds (default: all) on the Server object (unless `node`), as one monitored
        item (so they arrive in the order they were sent), published as fast as the server can."""
        sub = await self.client.create_subscription(0, self)
        await sub.subscribe_events(node or self.client.nodes.server, [self.client.get_node(self.type_id(k)) for k in kinds])

    def event_notification(self, event) -> None:
        self.events.append((time.perf_counter(), event))
        self.arrived.set()

    def of(self, kind: str) -> list:
        return [e for _, e in self.events if e.EventType == self.type_id(kind)]

    async def wait_for(self, predicate, timeout: float = 60.0, since: int = 0):
        """The first event (from index `since` on) matching `predicate`, waiting for it if need be."""
        deadline = time.monotonic() + timeout
        while True:
            self.arrived.clear()
            found = next((e for _, e in self.events[since:] if predicate(e)), None)
            if found is not None:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no such event")
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                pass

    async def state(self) -> tuple[str, str | None]:
        top = (await (await self.sm.get_child("0:CurrentState")).read_value()).Text
        sub = await (await self.auto.get_child("0:CurrentState")).read_data_value(raise_on_bad_status=False)
        return top, sub.Value.Value.Text if sub.StatusCode.is_good() and sub.Value.Value is not None else None

    async def call(self, node, name: str, *args):
        return await node.call_method(f"{self.mv}:{name}", *args)

    async def start_single_job(self, meas: str, part: str, recipe: str = "") -> str:
        out = await self.call(self.auto, "StartSingleJob", ua.MeasIdDataType(Id=meas), ua.PartIdDataType(Id=part),
                              ua.RecipeIdExternalDataType(Id=recipe), ua.ProductIdDataType(Id=""), NO_PARAMETERS)
        return out[0].Id


def _id(value) -> str | None:
    return None if value is None else value.Id


def result_json(r) -> dict:
    """A ResultDataType (or a ResultReady event, which has the same fields) as plain JSON."""
    content = r.ResultContent or []
    times = r.ProcessingTimes
    return {"uid": _id(r.ResultId), "state": int(r.ResultState), "job": _id(r.JobId), "meas": _id(r.MeasId),
            "part": _id(r.PartId), "recipe": _id(r.InternalRecipeId), "recipe_version": r.InternalRecipeId.Version,
            "external_recipe": _id(r.ExternalRecipeId), "config": _id(r.InternalConfigurationId),
            "created": r.CreationTime.isoformat() if r.CreationTime else None,
            "processing_ms": times.ProcessingDuration if times else None,
            "start": times.StartTime.isoformat() if times and times.StartTime else None,
            "content": [c.Value for c in content], "type": type(r).__name__}


async def run(url: str, server_cert: str, client_dir: str, user: str, pin: str, recipe: str, jobs: int) -> dict:
    out: dict = {}
    async with connect(url, Path(server_cert), Path(client_dir), user, pin) as client:
        out["types"] = sorted(await client.load_data_type_definitions())
        plc = await Plc(client).find()
        await plc.subscribe()
        await plc.call(plc.sm, "Reset", 0, "PLC start")
        await plc.call(plc.sm, "SelectModeAutomatic")
        await plc.call(plc.recipes, "PrepareRecipe", ua.RecipeIdExternalDataType(Id=recipe), ua.RecipeIdInternalDataType(Id=""))
        out["state_after_prepare"] = list(await plc.state())
        started = datetime.now(timezone.utc) - timedelta(seconds=1)
        job_ids, rounds = [], []
        for i in range(jobs):
            t0 = time.perf_counter()
            job = await plc.start_single_job(f"M-{i:04d}", f"P-{i:04d}")
            job_ids.append(job)
            await plc.wait_for(lambda e, job=job: e.EventType == plc.type_id("ResultReady") and e.JobId.Id == job)
            # the station is back in Ready before the next part (the Ready event follows the result)
            await plc.wait_for(lambda e, job=job: e.EventType == plc.type_id("Ready") and e.JobId.Id == job)
            rounds.append((time.perf_counter() - t0) * 1000)
        out["jobs"] = job_ids
        out["round_trip_ms"] = rounds
        out["events"] = [{"kind": next(k for k, v in EVENT_TYPES.items() if e.EventType == ua.NodeId(v, plc.mv)),
                          "job": _id(getattr(e, "JobId", None)), "t": t} for t, e in plc.events]
        out["results"] = [result_json(e) for e in plc.of("ResultReady")]
        first = plc.of("ResultReady")[0]
        handle, by_id, error = await plc.call(plc.results, "GetResultById", first.ResultId, 0)
        out["by_id"] = result_json(by_id)
        out["release"] = await plc.call(plc.results, "ReleaseResultHandle", handle)
        components = await plc.call(plc.results, "GetResultComponentsById", first.ResultId, 0)
        out["components"] = {"state": int(components[4]), "part": _id(components[6]), "job": _id(components[12]),
                             "content": [c.Value for c in components[15]]}
        part = out["results"][1]["part"]
        listed = await plc.call(plc.results, "GetResultListFiltered", 0, None, ua.PartIdDataType(Id=part), None, None, None,
                                None, None, None, 0, 0, 0)
        out["by_part"] = {"complete": listed[0], "count": listed[1], "uids": [r.ResultId.Id for r in listed[3]]}
        for name, state in (("fail", -2), ("pass", -1), ("completed", 1), ("failed", 4)):
            listed = await plc.call(plc.results, "GetResultListFiltered", state, None, None, None, None, None, None, None,
                                    None, 0, 0, 0)
            out[f"state_{name}"] = {"count": listed[1], "uids": [r.ResultId.Id for r in listed[3]]}
        page = await plc.call(plc.results, "GetResultListFiltered", 0, None, None, None, None, None, None, None,
                              ua.JobIdDataType(Id=job_ids[-1]), 0, 0, 0)
        out["by_job"] = [r.ResultId.Id for r in page[3]]
        page = await plc.call(plc.results, "GetResultListFiltered", 0, ua.MeasIdDataType(Id="M-0003"), None, None, None,
                              None, None, None, None, 0, 0, 0)
        out["by_meas"] = [r.ResultId.Id for r in page[3]]
        page = await plc.call(plc.results, "GetResultListFiltered", 1, None, None, None, None, None, None, None, None, 10, 20, 0)
        out["paged"] = {"complete": page[0], "count": page[1], "uids": [r.ResultId.Id for r in page[3]]}
        own = await client.get_namespace_index("urn:metal-inspection-station:opcua")
        timed = await plc.results.call_method(f"{own}:GetResultListByTime", started,
                                              datetime.now(timezone.utc) + timedelta(seconds=1), 0, "", 0, 0)
        out["by_time"] = {"count": timed[1], "uids": [r.ResultId.Id for r in timed[3]]}
        future = await plc.results.call_method(f"{own}:GetResultListByTime", datetime.now(timezone.utc) + timedelta(hours=1),
                                               datetime.now(timezone.utc) + timedelta(hours=2), 0, "", 0, 0)
        out["by_time_future"] = future[1]
        recipes = await plc.call(plc.recipes, "GetRecipeListFiltered", ua.RecipeIdExternalDataType(Id=recipe), None, 1, 0, 0, 0)
        out["recipes_prepared"] = [(r.Id, r.Version) for r in recipes[3]]
        await plc.call(plc.recipes, "ReleaseRecipeHandle", recipes[2])
    return out


if __name__ == "__main__":
    url, cert, client_dir, user, pin, recipe, jobs = sys.argv[1:8]
    print(json.dumps(asyncio.run(run(url, cert, client_dir, user, pin, recipe, int(jobs)))))
