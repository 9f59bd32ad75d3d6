"""Result outputs against a real broker (mosquitto) and a real HTTP server, on loopback ports.

Inspections are logged through the real store (the Station does not drive them
here); detections come from the real model on generated frames.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest
from conftest import wait_until

from app.inspection import Inspector
from app.outputs import open_output
from app.outputs.payload import result_payload
from app.outputs.worker import OutputWorker
from app.recipes import Recipe, Region
from app.store import InspectionRecord, InspectionStore, RegionRecord
from app.verdict import VerdictRule
from detector import Detector
from detector.regions import Roi
from mqtt_broker import Mosquitto, Subscriber, free_port, require_mosquitto
from synthetic import camera_frame

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "resources" / "result.schema.json").read_text())
STATION = "line-1"
RULE = VerdictRule()
FAST = {"retry_min_s": 0.05, "retry_max_s": 0.5, "poll_s": 0.5}  # worker back-off for tests (defaults: 0.2 .. 30 s)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector()


@pytest.fixture(scope="module")
def samples(detector):
    """Real inspections (not logged) of generated frames under a two-region recipe: scratched, clean, scratched, clean."""
    recipe = Recipe("bracket", regions=(Region("left", Roi(0, 0, 160, 240)), Region("right", Roi(160, 0, 160, 240))),
                    rule=RULE, threshold=0.3, version=2)
    inspector = Inspector(detector, None, STATION)
    results = [inspector.inspect(camera_frame(i % 2 == 0, seed=i), recipe, log=False) for i in range(4)]
    assert [r.verdict.verdict for r in results] == ["FAIL", "PASS", "FAIL", "PASS"]
    return detector, results


@pytest.fixture
def store(tmp_path):
    with InspectionStore(tmp_path / "data" / "inspections.sqlite") as s:
        yield s


@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def log_inspection(store: InspectionStore, samples, i: int):
    """Log one of the real inspections (as the Station will: line trigger, job id, part id)."""
    detector, results = samples
    r = results[i % len(results)]
    h, w = r.frame.shape[:2]
    rec = InspectionRecord(
        station=STATION, source="camera 0", frame_size=(w, h), roi=r.roi, model_id=detector.model_id,
        model_version=detector.metadata.created or "unknown", threshold=r.threshold, rule_json=RULE.to_json(),
        verdict=r.verdict.verdict, detections=r.detections, shown=r.verdict.shown, failing=r.verdict.failing,
        part_id=f"P{i}", job_id=f"J{i}", trigger="line", inference_ms=r.inference_ms, recipe=r.recipe.name,
        recipe_version=r.recipe.version, detection_regions=r.detection_regions,
        regions=[RegionRecord(g.name, g.roi, g.threshold, g.rule.to_json(), g.verdict.verdict) for g in r.regions])
    return store.record(rec)


class Producer:
    """Logs inspections as fast as the store takes them (and notifies the worker), until stopped."""

    def __init__(self, store, samples, worker):
        self.store, self.samples, self.worker = store, samples, worker
        self.ids: list[int] = []
        self.notify_s: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.ids.append(log_inspection(self.store, self.samples, len(self.ids)).id)
            t0 = time.perf_counter()
            self.worker.notify()
            self.notify_s.append(time.perf_counter() - t0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def logged_uids(store: InspectionStore, after: int = 0) -> list[str]:
    return [r["uid"] for r in store.logged_after(after, limit=1_000_000)]


def first_arrivals(uids: list[str]) -> list[str]:
    return list(dict.fromkeys(uids))


def received(sub: Subscriber) -> list[str]:
    """The result uids a subscriber got, each at its first arrival."""
    return first_arrivals([m["uid"] for m in sub.results()])


# -- URLs and the message --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "problem"), [
    ("mqtt:///plant", "no host"),
    ("mqtt://broker:99999/plant", "bad port"),
    ("mqtt://broker:http/plant", "bad port"),
    ("http://:8080/hook", "no host"),
    ("ftp://broker/plant", "unknown scheme ftp"),
    ("broker:1883", "must start with mqtt://"),
    ("mqtt://broker/plant/+", "cannot be an MQTT topic level"),
    ("mqtt://broker/plant?qos=2", "unknown URL option"),
    ("mqtt://broker/plant?ca=/etc/ca.pem", "use mqtts://"),
])
def test_bad_output_urls_are_refused_by_name(url, problem):
    with pytest.raises(ValueError, match=problem):
        open_output(url)


def test_output_names_hold_no_secrets_and_options_are_checked():
    out = open_output("mqtts://plc:s3cret@broker.plant/plant/lines?ca=/etc/plant-ca.pem")
    assert (out.name, out.user, out.password, out.ca) == ("mqtts://broker.plant:8883/plant/lines", "plc", "s3cret", "/etc/plant-ca.pem")
    hook = open_output("https://mes:s3cret@mes.plant/api/results?token=abc")
    assert hook.name == "https://mes.plant:443/api/results" and hook.target == "/api/results?token=abc"
    assert hook.headers["Authorization"].startswith("Basic ")
    with pytest.raises(ValueError, match="unknown option.*retries"):
        open_output("http://mes.plant/hook", retries=3)
    with pytest.raises(ValueError, match="unknown scheme") as err:
        open_output("ftp://u:s3cret@host/")
    assert "s3cret" not in str(err.value) and "u:***@host" in str(err.value)


def test_payload_matches_the_log_and_its_schema(store, samples):
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    detector, results = samples
    ids = [log_inspection(store, samples, i).id for i in range(4)]
    # Logged without regions (a whole-frame inspection): its one region is the row's.
    r = results[0]
    whole = InspectionRecord(
        station=STATION, source="", frame_size=(320, 240), roi=Roi(10, 10, 300, 220), model_id=detector.model_id,
        model_version="v", threshold=0.3, rule_json=RULE.to_json(), verdict="FAIL", detections=r.detections,
        shown=r.verdict.shown, failing=r.verdict.failing)
    ids.append(store.record(whole).id)
    payloads = [result_payload(store.get(i)) for i in ids]
    for p in payloads:
        validator.validate(p)
    for p, res in zip(payloads, results):
        row = store.get(p["seq"])
        assert (p["uid"], p["verdict"], p["part_id"], p["job_id"], p["trigger"], p["recipe"], p["recipe_version"]) == (
            row["uid"], res.verdict.verdict, row["part_id"], row["job_id"], "line", "bracket", 2)
        shown = sorted(res.verdict.shown, key=lambda i: -res.detections[i].score)
        assert [(d["class"], d["score"], d["region"]) for d in p["defects"]] == [
            (res.detections[i].label, round(res.detections[i].score, 4), res.detection_regions[i]) for i in shown]
        assert [d["box"] for d in p["defects"]] == [[round(v, 1) for v in res.detections[i].box] for i in shown]
        assert [(g["name"], g["box"], g["threshold"], g["verdict"]) for g in p["regions"]] == [
            (g.name, g.roi.to_list(), g.threshold, g.verdict.verdict) for g in res.regions]
    assert payloads[0]["defects"] and all(d["fails"] for d in payloads[0]["defects"])
    assert {g["verdict"] for g in payloads[0]["regions"]} == {"PASS", "FAIL"}  # the scratch is in one region only
    assert payloads[1]["defects"] == []
    assert payloads[-1]["regions"] == [{"name": "default", "box": [10, 10, 300, 220], "threshold": 0.3, "verdict": "FAIL"}]
    assert {d["region"] for d in payloads[-1]["defects"]} == {"default"}
    # The schema is strict: a field it does not document, or a missing one, is an error.
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**payloads[0], "extra": 1})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({k: v for k, v in payloads[0].items() if k != "job_id"})


# -- MQTT ---------------------------------------------------------------------------------------------------------


def test_mqtt_one_result_per_inspection_in_order_matching_the_log(tmp_path, store, samples, broker):
    detector, _ = samples
    sub = Subscriber(broker.port, f"plant/{STATION}/result")
    before = log_inspection(store, samples, 0).id  # logged before the output existed: not sent
    worker = OutputWorker(store, [open_output(f"mqtt://127.0.0.1:{broker.port}/plant")], STATION, **FAST)
    inspector = Inspector(detector, store, STATION)  # the real inspection path: model, pictures, log
    recipe = Recipe("plain", rule=RULE, threshold=0.3)
    try:
        ids = []
        for i in range(6):
            result = inspector.inspect(camera_frame(i % 2 == 0, seed=10 + i), recipe, part_id=f"P{i}")
            worker.notify()
            ids.append(result.inspection_id)
        assert sub.wait_for(lambda s: len(s.messages) >= 6)
        assert worker.stop(drain=True, timeout=10)
    finally:
        worker.stop(drain=False, timeout=2)
        sub.close()
    got = sub.results()
    assert [m["seq"] for m in got] == ids and before not in [m["seq"] for m in got]  # each once, in order
    for message in got:
        row = store.get(message["seq"])
        assert message == result_payload(row)
        assert (message["uid"], message["verdict"]) == (row["uid"], row["verdict"])
        assert [d["class"] for d in message["defects"]] == [d["label"] for d in row["detections"] if d["shown"]]
    assert [m["verdict"] for m in got] == ["FAIL", "PASS"] * 3
    assert store.output_backlog(f"mqtt://127.0.0.1:{broker.port}/plant") == (0, None)


def test_mqtt_broker_killed_and_restarted_loses_nothing(tmp_path, store, samples):
    """A `kill -9` of the broker mid-stream: the station loses nothing it holds.

    QoS 1 is a hand-over from the station to the broker. What the killed broker had acknowledged and
    not yet passed on to the receiver dies with it (it saves only on request); the station has moved
    on from those, rightly. So the receiver gets every result except exactly that run, in log order:
    a result the station skipped, or dropped while it was unacknowledged, fails this.
    """
    require_mosquitto()
    broker = Mosquitto(tmp_path / "broker", persistent=True).start()
    # The receiver keeps a persistent session, saved before the kill: the restarted broker queues for it
    # what arrives before it is back (as a plant's receiver would be set up).
    sub = Subscriber(broker.port, f"plant/{STATION}/result", session="mes-receiver")
    broker.save()
    output = open_output(f"mqtt://127.0.0.1:{broker.port}/plant", reconnect_max_s=0.3, ack_timeout=1.0)
    worker = OutputWorker(store, [output], STATION, **FAST)
    start = store.output_cursor(output.name)
    try:
        with Producer(store, samples, worker) as producer:
            worker.set_state("busy")  # after the save: the restarted broker knows an older state
            assert sub.wait_for(lambda s: len(s.messages) >= 20)
            broker.kill()
            assert wait_until(lambda: not sub.client.is_connected())
            from_killed = received(sub)  # all the receiver got from it
            assert wait_until(lambda: worker.status()[0].backlog_rows >= 30)
            during = worker.status()[0]  # its `delivered`: results the killed broker acknowledged
            broker.start()
            n = len(producer.ids)
            assert wait_until(lambda: len(producer.ids) >= n + 30)
        log = logged_uids(store, start)
        died_with_broker = set(log[len(from_killed):during.delivered])
        expected = [u for u in log if u not in died_with_broker]
        assert wait_until(lambda: received(sub) == expected, 20), (len(log), len(from_killed), during.delivered,
                                                                   len(received(sub)))
        assert wait_until(lambda: worker.status()[0].backlog_rows == 0)
        after = worker.status()[0]
        state = Subscriber(broker.port, f"plant/{STATION}/state")
        assert state.wait_for(lambda s: s.payloads() == [b"busy"], 5), state.payloads()  # published again on reconnect
        state.close()
    finally:
        worker.stop(drain=False, timeout=2)
        sub.close()
        broker.stop()
    assert from_killed == log[:len(from_killed)]  # what the receiver had: the log's head, in order
    assert during.connected is False and during.last_error and during.oldest_age_s is not None
    assert (after.backlog_rows, after.oldest_age_s, after.connected, after.last_error) == (0, None, True, None)
    assert len(log) == len(producer.ids) and after.delivered == len(log)
    assert max(producer.notify_s) < 0.01  # the station never waited for the output


def test_mqtt_counts_a_result_only_when_the_broker_accepts_it(tmp_path, store, samples):
    require_mosquitto()
    # A broker that acknowledges the publish with "not authorized" (MQTT 5 reason code) has not taken it.
    refusing = Mosquitto(tmp_path / "refusing", acl="topic read #\n").start()
    output = open_output(f"mqtt://127.0.0.1:{refusing.port}/plant", reconnect_max_s=0.3, ack_timeout=1.0)
    worker = OutputWorker(store, [output], STATION, **FAST)
    try:
        uid = log_inspection(store, samples, 0).uid
        worker.notify()
        assert wait_until(lambda: "Not authorized" in (worker.status()[0].last_error or ""))
        status = worker.status()[0]
        assert (status.backlog_rows, status.delivered) == (1, 0)
        refusing.kill()
        accepting = Mosquitto(tmp_path / "accepting", port=refusing.port).start()
        sub = Subscriber(accepting.port, f"plant/{STATION}/result")
        try:
            assert sub.wait_for(lambda s: [m["uid"] for m in s.results()] == [uid])
            assert wait_until(lambda: worker.status()[0].backlog_rows == 0)
            assert worker.status()[0].delivered == 1
        finally:
            sub.close()
            accepting.stop()
    finally:
        worker.stop(drain=False, timeout=2)
        refusing.stop()


def test_mqtt_state_is_retained_and_the_last_will_says_offline(tmp_path, store, broker):
    state_topic = f"plant/{STATION}/state"
    url = f"mqtt://127.0.0.1:{broker.port}/plant"
    # A station process that vanishes (SIGKILL): the broker publishes its Last Will.
    station = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from app.store import InspectionStore\n"
         "from app.outputs import open_output\n"
         "from app.outputs.worker import OutputWorker\n"
         "w = OutputWorker(InspectionStore(sys.argv[1]), [open_output(sys.argv[2])], sys.argv[3])\n"
         "w.set_state('ready')\n"
         "time.sleep(60)\n",
         str(tmp_path / "other" / "inspections.sqlite"), url, STATION],
        cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    watcher = Subscriber(broker.port, state_topic)
    try:
        assert watcher.wait_for(lambda s: b"ready" in s.payloads(), 15), watcher.payloads()
        late = Subscriber(broker.port, state_topic)  # retained: a subscriber coming later gets it at once
        assert late.wait_for(lambda s: s.payloads() == [b"ready"], 5), late.payloads()
        late.close()
        station.kill()
        station.wait(10)
        assert watcher.wait_for(lambda s: s.payloads()[-1:] == [b"offline"], 10), watcher.payloads()
        late = Subscriber(broker.port, state_topic)
        assert late.wait_for(lambda s: s.payloads() == [b"offline"], 5), late.payloads()
        late.close()
        # A station that closes says offline itself (no Last Will then); states in between are retained too.
        worker = OutputWorker(store, [open_output(url)], STATION, **FAST)
        worker.set_state("busy")
        assert watcher.wait_for(lambda s: s.payloads()[-1:] == [b"busy"], 10), watcher.payloads()
        worker.set_state("error")
        assert watcher.wait_for(lambda s: s.payloads()[-1:] == [b"error"], 10), watcher.payloads()
        assert worker.stop(drain=True, timeout=5)
        assert watcher.wait_for(lambda s: s.payloads()[-1:] == [b"offline"], 10), watcher.payloads()
    finally:
        station.kill()
        watcher.close()
    with pytest.raises(ValueError, match="station state"):
        OutputWorker(store, [], STATION).set_state("")
    with pytest.raises(ValueError, match="station name 'line/1'"):
        OutputWorker(store, [open_output(url)], "line/1")


# -- webhook ------------------------------------------------------------------------------------------------------


class Receiver:
    """A small HTTP server: records each POST and answers as `mode` says (ok, 503, 400, drop, hang)."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.mode = "ok"
        self.accepted: list[dict] = []  # bodies answered 200
        self.requests: list[dict] = []  # every request: headers and what it was answered
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                mode = receiver.mode
                receiver.requests.append({"path": self.path, "mode": mode, "key": self.headers["Idempotency-Key"],
                                          "type": self.headers["Content-Type"]})
                if mode == "drop":
                    self.close_connection = True  # no answer at all: the client sees the connection closed
                    return
                if mode == "hang":
                    time.sleep(3)
                    return
                status = {"ok": 200, "503": 503, "400": 400}[mode]
                if status == 200:
                    receiver.accepted.append(json.loads(body))
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status != 200 else b"ok")

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/results?line=1"


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_webhook_outage_503_dropped_and_refused_connections_loses_nothing(store, samples, receiver):
    worker = OutputWorker(store, [open_output(receiver.url, timeout=1.0)], STATION, **FAST)
    start = store.output_cursor(open_output(receiver.url).name)
    try:
        with Producer(store, samples, worker) as producer:
            assert wait_until(lambda: len(receiver.accepted) >= 10)
            backlog = []
            # Server errors, connections closed unanswered, nobody listening: each seen by the worker in turn.
            for mode, error in (("503", "503 Service Unavailable"), ("drop", "RemoteDisconnected"), ("down", "ConnectionRefused")):
                if mode == "down":
                    receiver.stop()
                else:
                    receiver.mode = mode
                assert wait_until(lambda error=error: error in (worker.status()[0].last_error or ""), 5), worker.status()
                backlog.append(worker.status()[0])
            receiver.mode = "ok"
            receiver.start()
            n = len(producer.ids)
            assert wait_until(lambda: len(producer.ids) >= n + 20)
        assert wait_until(lambda: worker.status()[0].backlog_rows == 0)
        assert worker.stop(drain=True, timeout=5)
    finally:
        worker.stop(drain=False, timeout=2)
    modes = {r["mode"] for r in receiver.requests}
    assert {"503", "drop"} <= modes
    assert all(s.backlog_rows > 0 and s.oldest_age_s > 0 and s.connected is False for s in backlog), backlog
    log = logged_uids(store, start)
    got = [m["uid"] for m in receiver.accepted]
    assert set(got) == set(log) and len(log) == len(producer.ids)
    assert first_arrivals(got) == log
    assert all(r["key"] and r["type"] == "application/json" and r["path"] == "/results?line=1" for r in receiver.requests)
    assert [r["key"] for r in receiver.requests if r["mode"] == "ok"] == got  # Idempotency-Key is the uid


def test_webhook_4xx_is_logged_as_an_error_and_kept(store, samples, receiver, caplog):
    receiver.mode = "400"
    worker = OutputWorker(store, [open_output(receiver.url)], STATION, **FAST)
    try:
        with caplog.at_level(logging.WARNING, logger="app.outputs"):
            uids = [log_inspection(store, samples, i).uid for i in range(3)]
            worker.notify()
            assert wait_until(lambda: len(receiver.requests) >= 3)
            status = worker.status()[0]
            receiver.mode = "ok"
            assert worker.stop(drain=True, timeout=5)
    finally:
        worker.stop(drain=False, timeout=2)
    assert status.backlog_rows == 3 and "400" in status.last_error and status.connected is False
    errors = [r for r in caplog.records if r.levelno == logging.ERROR and "refused the result (400" in r.getMessage()]
    assert len(errors) == 1  # said once clearly, not once per retry
    assert [m["uid"] for m in receiver.accepted] == uids
    assert {r["key"] for r in receiver.requests if r["mode"] == "400"} == {uids[0]}  # the next waits for the first


def test_worker_never_delays_inspections_and_resumes_from_its_cursor(tmp_path, samples, receiver):
    db = tmp_path / "data" / "inspections.sqlite"
    receiver.mode = "hang"  # accepts, never answers
    with InspectionStore(db) as store:
        before = [log_inspection(store, samples, i).uid for i in range(3)]  # the output did not exist yet
        worker = OutputWorker(store, [open_output(receiver.url, timeout=0.5)], STATION, **FAST)
        uids, waits = [], []
        for i in range(20):
            uids.append(log_inspection(store, samples, i).uid)
            t0 = time.perf_counter()
            worker.notify()
            waits.append(time.perf_counter() - t0)
        assert wait_until(lambda: worker.status()[0].last_error is not None)
        status = worker.status()[0]
        t0 = time.monotonic()
        assert worker.stop(drain=True, timeout=0.5) is False  # could not drain: says so, and keeps the rest
        assert time.monotonic() - t0 < 3
    assert max(waits) < 0.005
    assert status.backlog_rows == 20 and status.oldest_age_s is not None and status.oldest_age_s >= 0
    receiver.mode = "ok"
    with InspectionStore(db) as store:  # a restart: new store, new worker, same log
        worker = OutputWorker(store, [open_output(receiver.url)], STATION, **FAST)
        try:
            assert worker.stop(drain=True, timeout=10)
        finally:
            worker.stop(drain=False, timeout=2)
        got = [m["uid"] for m in receiver.accepted]
        assert got == uids and not set(before) & set(got)
        # Stopped again and restarted with more logged meanwhile: only the new ones go out.
        more = [log_inspection(store, samples, i).uid for i in range(5)]
        worker = OutputWorker(store, [open_output(receiver.url)], STATION, **FAST)
        try:
            assert worker.stop(drain=True, timeout=10)
        finally:
            worker.stop(drain=False, timeout=2)
    assert [m["uid"] for m in receiver.accepted] == uids + more


def test_two_outputs_of_the_same_name_are_refused(store):
    with pytest.raises(ValueError, match="given twice"):
        OutputWorker(store, [open_output("http://mes/hook"), open_output("http://mes:80/hook?x=1")], STATION)
