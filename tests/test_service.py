"""``seqrec serve``: every endpoint, every bad request, durable events across a killed server, reload under
concurrent requests, micro-batching, and the ONNX backend. Each server runs in a child process on a free
loopback port."""

import json
import signal
import threading

import httpx
import numpy as np
import pandas as pd
import pytest

import seqrec
from seqrec.cli import main

from conftest import cyclic_frame
from service_helpers import TOKEN, LiveServer

FAST = ["--max-len", "10", "--dim", "16", "--epochs", "3", "--batch-size", "64", "--lr", "0.01", "--no-progress"]


def _train(root, name, frame, *extra):
    data = root / f"{name}.csv"
    frame.to_csv(data, index=False)
    out = root / name
    assert main(["train", "--data", str(data), "--model", "sasrec", "--loss", "ce", "--out", str(out), *FAST,
                 *extra]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    first = _train(root, "first", cyclic_frame(n_users=80, n_items=40))
    second = _train(root, "second", cyclic_frame(n_users=90, n_items=45, seed=1), "--seed", "1")
    items = root / "items.csv"
    pd.DataFrame({"item_id": np.arange(1, 41), "title": [f"Film number {i}" for i in range(1, 41)],
                  "category": ["drama", "comedy"] * 20}).to_csv(items, index=False)
    return {"first": first, "second": second, "items": items, "root": root}


LIMITS = ["--max-k", "100", "--max-histories", "8", "--max-history", "200", "--max-events", "5",
          "--max-body", "20000"]


@pytest.fixture(scope="module")
def server(runs):
    with LiveServer(runs["first"], "--items", str(runs["items"]), *LIMITS, state=runs["root"] / "events.sqlite") as s:
        yield s


def test_health_readiness_model_card_docs_and_page(server, runs):
    c = server.client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json()["status"] == "ready"
    card = c.get("/v1/model").json()
    config = json.loads((runs["first"] / "config.json").read_text())
    assert card["name"] == "sasrec" and card["params"]["max_len"] == 10 and card["n_items"] == 40
    assert card["weights_sha256"] == config["files"]["weights.safetensors"]["sha256"]
    assert card["training_data"]["fingerprint_sha256"] == config["files"]["split.npz"]["sha256"]
    assert card["test"]["metrics"] and card["test"]["protocol"]  # the protocol card and test metrics
    assert card["title_column"] == "title" and card["limits"]["max_k"] == 100
    schema = c.get("/openapi.json").json()
    assert {"/v1/recommend", "/v1/recommend/batch", "/v1/users/{user_id}/recommendations",
            "/v1/users/{user_id}/events", "/v1/model", "/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
    assert c.get("/docs").status_code == 200
    page = c.get("/")
    assert page.status_code == 200 and "seqrec" in page.text and c.get("/static/app.js").status_code == 200


def test_recommend_equals_the_library_and_batch_equals_single(server, runs):
    model = seqrec.load(runs["first"])
    histories = [[3, 4, 5], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22], [7]]
    expected, scores = model.recommend(histories, k=5)
    singles = [server.client.post("/v1/recommend", json={"history": h, "k": 5}).json() for h in histories]
    batch = server.client.post("/v1/recommend/batch", json={"histories": histories, "k": 5}).json()
    for r, single in enumerate(singles):
        assert single["items"] == expected[r].tolist()
        np.testing.assert_allclose(single["scores"], scores[r], rtol=1e-5, atol=1e-6)
        assert batch["results"][r]["items"] == single["items"]
        assert single["model"] == batch["model"] and single["model"].startswith("sasrec-")
    assert singles[1]["truncated"] == 3 and "older" in singles[1]["warnings"][0]  # 13 items, window 10
    assert not set(singles[0]["items"]) & {3, 4, 5}
    with_seen = server.client.post("/v1/recommend", json={"history": [3, 4, 5], "k": 40, "exclude_seen": False}).json()
    assert {3, 4, 5} <= set(with_seen["items"])
    among = server.client.post("/v1/recommend", json={"history": [3, 4], "k": 3, "items": [1, 2, 3, 30]}).json()
    assert set(among["items"]) <= {1, 2, 30} and among["k"] == 3  # 3 is seen: 3 candidates remain
    meta = server.client.post("/v1/recommend", json={"history": [3], "k": 2, "metadata": True}).json()
    assert meta["metadata"][0]["title"] == f"Film number {meta['items'][0]}"
    assert meta["history_metadata"] == [{"item_id": 3, "title": "Film number 3", "category": "drama"}]


def test_unknown_history_items_are_reported_and_string_ids_match(server):
    body = server.client.post("/v1/recommend", json={"history": ["3", "nope", 4], "k": 3}).json()
    assert body["unknown_items"] == ["nope"] and body["history_length"] == 2
    same = server.client.post("/v1/recommend", json={"history": [3, 4], "k": 3}).json()
    assert body["items"] == same["items"]
    alone = server.client.post("/v1/recommend", json={"history": ["nope"], "k": 3}).json()
    assert alone["unknown_items"] == ["nope"] and "no item of the history is known" in alone["warnings"][0]


def test_known_users_and_their_history(server, runs):
    model = seqrec.load(runs["first"])
    expected = model.recommend_users([7, 8], k=4)
    for user in (7, 8):
        body = server.client.get(f"/v1/users/{user}/recommendations", params={"k": 4}).json()
        assert body["items"] == expected[expected.user_id == user].item_id.tolist()
    history = server.client.get("/v1/users/7", params={"metadata": True}).json()
    assert history["stored"] > 0 and history["appended"] == 0 and len(history["metadata"]) == len(history["history"])
    users = server.client.get("/v1/users", params={"q": "7"}).json()["users"]
    assert "7" in users and all(u.startswith("7") for u in users)
    items = server.client.get("/v1/items", params={"q": "number 12"}).json()["items"]
    assert items == [{"item_id": 12, "title": "Film number 12", "category": "comedy"}]


def test_appended_events_change_the_next_recommendation(server, runs):
    model = seqrec.load(runs["first"])
    before = server.client.get("/v1/users/9/recommendations", params={"k": 5}).json()
    answer = server.client.post("/v1/users/9/events", json={"items": [30, 31, "unknown-item"]}).json()
    assert answer == {"user_id": "9", "appended": 3, "appended_total": 3, "unknown_items": ["unknown-item"],
                      "known_user": True}
    after = server.client.get("/v1/users/9/recommendations", params={"k": 5}).json()
    stored = model.histories_
    u = int(model.vocab_.encode_users([9])[0])
    history = model.vocab_.decode_items(stored.items[stored.offsets[u]:stored.offsets[u + 1]]).tolist() + [30, 31]
    expected, _ = model.recommend([history], k=5)
    assert after["items"] == expected[0].tolist() and after["items"] != before["items"]
    assert after["unknown_items"] == ["unknown-item"]
    # a user the model never saw starts a history with events
    assert server.client.get("/v1/users/newcomer/recommendations").status_code == 404
    server.client.post("/v1/users/newcomer/events", json={"items": [5, 6], "timestamps": [1.0, 2.0]})
    fresh = server.client.get("/v1/users/newcomer/recommendations", params={"k": 3}).json()
    assert fresh["items"] == model.recommend([[5, 6]], k=3)[0][0].tolist()


BAD = [  # (method, path, body, status, field)
    ("post", "/v1/recommend", {"history": "3,4", "k": 5}, 422, "history"),
    ("post", "/v1/recommend", {"history": [3, 4.5]}, 422, "history.1"),
    ("post", "/v1/recommend", {"history": [3], "k": "ten"}, 422, "k"),
    ("post", "/v1/recommend", {"history": [3], "k": True}, 422, "k"),
    ("post", "/v1/recommend", {"history": []}, 422, "history"),
    ("post", "/v1/recommend", {"k": 5}, 422, "history"),
    ("post", "/v1/recommend", {"history": [3], "k": 0}, 422, "k"),
    ("post", "/v1/recommend", {"history": [3], "k": -2}, 422, "k"),
    ("post", "/v1/recommend", {"history": [3], "k": 101}, 422, "k"),
    ("post", "/v1/recommend", {"history": [3], "exclude_seen": "yes"}, 422, "exclude_seen"),
    ("post", "/v1/recommend", {"history": [3], "items": []}, 422, "items"),
    ("post", "/v1/recommend", {"history": [3], "items": [1, "no-such-item"]}, 422, "items"),
    ("post", "/v1/recommend", {"history": [3], "colour": "red"}, 422, "colour"),
    ("post", "/v1/recommend", {"history": list(range(1, 40)) * 6}, 422, "history"),
    ("post", "/v1/recommend", [3, 4], 422, "body"),
    ("post", "/v1/recommend/batch", {"histories": []}, 422, "histories"),
    ("post", "/v1/recommend/batch", {"histories": [[3], []]}, 422, "histories.1"),
    ("post", "/v1/recommend/batch", {"histories": [[3]] * 9}, 422, "histories"),
    ("post", "/v1/recommend/batch", {"histories": [3, 4]}, 422, "histories.0"),
    ("get", "/v1/users/nobody/recommendations", None, 404, "user_id"),
    ("get", "/v1/users/7/recommendations?k=0", None, 422, "k"),
    ("get", "/v1/users/7/recommendations?k=abc", None, 422, "k"),
    ("get", "/v1/users/7/recommendations?k=1000", None, 422, "k"),
    ("get", "/v1/users/nobody", None, 404, "user_id"),
    ("post", "/v1/users/7/events", {"items": []}, 422, "items"),
    ("post", "/v1/users/7/events", {"items": [1, 2, 3, 4, 5, 6]}, 422, "items"),
    ("post", "/v1/users/7/events", {"items": [1, 2], "timestamps": [1.0]}, 422, "timestamps"),
    ("post", "/v1/users/7/events", {"items": [{"id": 1}]}, 422, "items.0"),
    ("get", "/v1/items?limit=0", None, 422, "limit"),
    ("get", "/v1/no-such-endpoint", None, 404, None),
    ("delete", "/v1/recommend", None, 405, None),
]


@pytest.mark.parametrize("method,path,body,status,field", BAD, ids=[f"{m} {p} {b}"[:60] for m, p, b, *_ in BAD])
def test_bad_requests_get_a_4xx_naming_the_field(server, method, path, body, status, field):
    response = server.client.request(method.upper(), path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["message"]
    if field is not None:
        assert field in [p["field"] for p in error["problems"]] or error["field"] == field, error


def test_malformed_json_and_oversized_bodies(server):
    c = server.client
    broken = c.post("/v1/recommend", content=b'{"history": [3,', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and broken.json()["error"]["field"] == "body"
    huge = c.post("/v1/recommend", content=b'{"history": [' + b"3," * 15000 + b"3]}",
                  headers={"content-type": "application/json"})
    assert huge.status_code == 413 and "20000 bytes" in huge.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds on the bytes received
        yield b'{"history": ['
        for _ in range(300):
            yield b"3," * 50
        yield b"3]}"

    streamed = c.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    clamped = c.post("/v1/recommend", json={"history": [3], "k": 60, "exclude_seen": False}).json()
    assert clamped["k"] == 40 and "clamped" in clamped["warnings"][0]  # 40 items in the catalogue
    assert c.get("/healthz").status_code == 200  # the worker is still there


def test_metrics_count_requests_and_batches_and_the_suite_saw_no_500(server):
    server.client.post("/v1/recommend", json={"history": [3], "k": 2})
    text = server.client.get("/metrics").text
    assert 'seqrec_requests_total{endpoint="/v1/recommend",method="POST",status="200"}' in text
    assert "seqrec_request_seconds_bucket" in text and "seqrec_batch_rows_count" in text
    assert 'seqrec_model_info{backend="torch",model="sasrec-' in text
    assert 'status="500"' not in text
    assert "Traceback" not in "".join(server.log)


def test_admin_reload_needs_the_token(server):
    c = server.client
    assert c.post("/v1/admin/reload").status_code == 401
    assert c.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    refused = c.post("/v1/admin/reload", json={"run_dir": "/no/such/run"}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 422 and "previous model keeps serving" in refused.json()["error"]["message"]
    assert c.post("/v1/recommend", json={"history": [3]}).status_code == 200


def test_without_a_token_the_admin_endpoint_is_disabled(runs, tmp_path):
    with LiveServer(runs["first"], state=tmp_path / "e.sqlite", token=None) as s:
        answer = s.client.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
        assert answer.status_code == 403 and "SEQREC_ADMIN_TOKEN" in answer.json()["error"]["message"]


def test_appended_events_survive_kill_9(runs, tmp_path):
    state = tmp_path / "events.sqlite"
    s = LiveServer(runs["first"], state=state)
    for i in range(5):
        assert s.client.post("/v1/users/12/events", json={"items": [20 + i]}).status_code == 200
    s.client.post("/v1/users/someone-new/events", json={"items": [3, 4]})
    expected = s.client.get("/v1/users/12/recommendations").json()["items"]
    assert s.stop(signal.SIGKILL) == -signal.SIGKILL  # no shutdown hook ran
    with LiveServer(runs["first"], state=state) as again:
        history = again.client.get("/v1/users/12").json()
        assert history["history"][-5:] == [20, 21, 22, 23, 24] and history["appended"] == 5
        assert again.client.get("/v1/users/12/recommendations").json()["items"] == expected
        assert again.client.get("/v1/users/someone-new").json()["history"] == [3, 4]


def _hammer(url: str, stop: threading.Event, results: list, history) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            r = c.post("/v1/recommend", json={"history": history, "k": 5})
            results.append((r.status_code, r.json().get("model")))


def test_reload_under_concurrent_requests_fails_none(runs, tmp_path):
    with LiveServer(runs["first"], "--max-wait-ms", "20", state=tmp_path / "e.sqlite") as s:
        old = s.client.get("/v1/model").json()["id"]
        stop, results = threading.Event(), []
        threads = [threading.Thread(target=_hammer, args=(s.url, stop, results, [3, 4, 5])) for _ in range(8)]
        for t in threads:
            t.start()
        try:
            while len(results) < 40:
                stop.wait(0.02)
            auth = {"Authorization": f"Bearer {TOKEN}"}
            swapped = s.client.post("/v1/admin/reload", json={"run_dir": str(runs["second"])}, headers=auth)
            assert swapped.status_code == 200
            seen = len(results)
            while len(results) < seen + 40:
                stop.wait(0.02)
            broken = runs["root"] / "broken"
            broken.mkdir(exist_ok=True)
            (broken / "config.json").write_text("{not json")
            assert s.client.post("/v1/admin/reload", json={"run_dir": str(broken)}, headers=auth).status_code == 422
            seen = len(results)
            while len(results) < seen + 20:
                stop.wait(0.02)
        finally:
            stop.set()
            for t in threads:
                t.join()
        new = swapped.json()["model"]
        assert {status for status, _ in results} == {200}
        models = [m for _, m in results]
        assert old != new and models[0] == old and models[-1] == new  # the broken one never served
        assert s.client.get("/v1/model").json()["n_items"] == 45  # the second run's vocabulary
        second = seqrec.load(runs["second"])  # its users (85 is not among the first run's), their histories
        expected = second.recommend_users([85, 7], k=5)
        for user in (85, 7):
            got = s.client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()["items"]
            assert got == expected[expected.user_id == user].item_id.tolist()
        metrics = s.client.get("/metrics").text
        passes = float(next(line.split()[1] for line in metrics.splitlines()
                            if line.startswith("seqrec_batch_rows_count")))
        rows = float(next(line.split()[1] for line in metrics.splitlines() if line.startswith("seqrec_batch_rows_sum")))
        assert rows >= len(results) and passes < rows  # concurrent requests shared forward passes
        assert 'seqrec_reloads_total{outcome="ok"} 1.0' in metrics and 'outcome="refused"} 1.0' in metrics


def test_sighup_reloads_the_run_directory(runs, tmp_path):
    with LiveServer(runs["first"], state=tmp_path / "e.sqlite") as s:
        s.process.send_signal(signal.SIGHUP)
        for _ in range(200):
            if 'seqrec_reloads_total{outcome="ok"} 1.0' in s.client.get("/metrics").text:
                break
            threading.Event().wait(0.05)
        else:
            raise AssertionError("SIGHUP did not reload: " + "".join(s.log))
        assert s.client.post("/v1/recommend", json={"history": [3]}).status_code == 200


def test_onnx_backend_answers_as_the_torch_backend(runs, tmp_path):
    model = seqrec.load(runs["first"])
    histories = [[3, 4, 5], list(range(1, 16)), [20]]
    expected, scores = model.recommend(histories, k=5)
    with LiveServer(runs["first"], "--backend", "onnx", state=tmp_path / "e.sqlite") as s:
        assert s.client.get("/v1/model").json()["backend"] == "onnx"
        batch = s.client.post("/v1/recommend/batch", json={"histories": histories, "k": 5}).json()["results"]
        for r, row in enumerate(batch):
            assert row["items"] == expected[r].tolist()  # items older than the window stay excluded
            np.testing.assert_allclose(row["scores"], scores[r], atol=1e-4)
        among = s.client.post("/v1/recommend", json={"history": [3, 4], "k": 2, "items": [1, 3, 30]}).json()
        assert among["items"] == model.recommend([[3, 4]], k=2, items=[1, 3, 30])[0][0].tolist()
        user = s.client.get("/v1/users/7/recommendations", params={"k": 4}).json()
        assert user["items"] == model.recommend_users([7], k=4).item_id.tolist()
    assert (runs["first"] / "onnx" / "export.json").is_file()  # exported on first use, beside the run
