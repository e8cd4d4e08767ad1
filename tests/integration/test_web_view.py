"""The web view and the replay report in a real browser (headless Chromium), on a drifting
run over the real broker and on a replayed period; the API's "why" fields against numpy on
the events of the window."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig
from tests.browser import chart_sizes, chromium, feature_order
from tests.integration.test_replay import (
    START,
    _epoch,
    generate,
    run_replay,
    write_config,
    write_jsonl,
)

pytestmark = pytest.mark.integration

T0 = float(int(time.time()) // 100 * 100 - 1000)  # recent, pane-aligned
NUMERICAL, CATEGORICAL = ["age", "amount", "balance"], ["country", "device"]
DRIFTED = {"amount", "device"}
CATS = np.array(["a", "b", "c", "d"], dtype=object)
N = 10_000  # 100 s of event time


def _columns(rng, n, drifted):
    cols = {}
    for name in NUMERICAL:
        cols[name] = rng.normal(1.5 if drifted and name in DRIFTED else 0.0, 1.0, n)
    for name in CATEGORICAL:
        p = [0.1, 0.1, 0.1, 0.7] if drifted and name in DRIFTED else [0.4, 0.3, 0.2, 0.1]
        cols[name] = rng.choice(CATS, n, p=p)
    cols["prediction"] = rng.random(n)
    return cols


def _get(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("content-type"), r.read()


def test_the_web_view_shows_drifted_features_first_with_their_charts(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(42)
    ref = _columns(rng, 5000, drifted=False)
    ref["label"] = (rng.random(5000) < ref["prediction"]).astype(int)
    names = list(ref)
    rows = zip(*(ref[c].tolist() for c in names), strict=True)
    (tmp_path / "ref.csv").write_text(
        "\n".join([",".join(names), *(",".join(map(str, r)) for r in rows)]) + "\n"
    )
    topic, truth, dlq = make_topic(), make_topic(), make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "ground_truth_topic": truth,
                "dead_letter_topic": dlq,
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "http": {"host": "127.0.0.1", "port": 0},
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "5s"},
            "models": [
                {
                    "name": "fraud",
                    "task": "binary_classification",
                    "positive_label": 1,
                    "decision_threshold": 0.5,
                    "reference": {"path": str(tmp_path / "ref.csv")},
                    "drift": {"min_events": 500},
                    "features": {
                        **{n: {"type": "numerical"} for n in NUMERICAL},
                        **{n: {"type": "categorical"} for n in CATEGORICAL},
                    },
                }
            ],
        }
    )
    service = Service(config)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    thread = threading.Thread(target=ConsumerLoop(service, config.kafka).run, args=(stop,))
    thread.start()
    cols = _columns(rng, N, drifted=True)
    y_true = (rng.random(N) < 0.5).astype(int)
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
        # ten steps of 10 s of event time, each counted before the next is sent: the
        # window moves step by step, as in a live run
        for step in range(10):
            for i in range(step * N // 10, (step + 1) * N // 10):
                t = T0 + i * 0.01
                features = {n: cols[n][i].item() for n in NUMERICAL}
                features.update({n: str(cols[n][i]) for n in CATEGORICAL})
                event = {
                    "event_id": f"e{i}",
                    "model": "fraud",
                    "timestamp": t,
                    "features": features,
                    "prediction": float(cols["prediction"][i]),
                }
                producer.send(topic, key=f"e{i}".encode(), value=msgspec.json.encode(event))
                label = {"event_id": f"e{i}", "model": "fraud", "label": int(y_true[i]),
                         "timestamp": t + 0.5}  # fmt: skip
                producer.send(truth, key=f"e{i}".encode(), value=msgspec.json.encode(label))
            producer.flush()
            deadline = time.time() + 30
            while time.time() < deadline:
                counted = json.loads(_get(http.port, "/api/v1/models/fraud")[2])
                if counted["events_total"] >= (step + 1) * N // 10:
                    break
                time.sleep(0.2)
        producer.close()

        # 100 s of events in 10 s panes, 5 s lateness: the final window is [30 s, 90 s)
        deadline, data = time.time() + 120, None
        while time.time() < deadline:
            data = json.loads(_get(http.port, "/api/v1/models/fraud")[2])
            ev = data["evaluation"]
            if ev and ev["window"]["events"] == 6000 and ev["window"]["start"] == T0 + 30:
                break
            time.sleep(0.5)
        ev = data["evaluation"]
        assert ev["window"]["events"] == 6000
        assert set(ev["drifted_features"]) == DRIFTED
        assert len(data["history"]) >= 5  # the windows evaluated so far, for the charts
        assert data["history"][-1]["window_end"] == T0 + 90
        ends = [p["window_end"] for p in data["history"]]
        assert ends == sorted(set(ends))  # one point per window position
        # a refresh asks for the windows from the newest one it holds
        since = ends[-2]
        newer = json.loads(_get(http.port, f"/api/v1/models/fraud?history_since={since!r}")[2])
        assert [p["window_end"] for p in newer["history"]] == ends[-2:]
        whole = json.loads(_get(http.port, "/api/v1/models/fraud")[2])
        assert len(whole["history"]) == len(ends)
        with pytest.raises(urllib.error.HTTPError) as bad:  # not silently the whole history
            _get(http.port, "/api/v1/models/fraud?history_since=nan")
        assert bad.value.code == 400

        # the "why" fields against numpy on the events of the window
        window = slice(3000, 9000)
        feats = {f["name"]: f for f in ev["features"]}
        for name in NUMERICAL:
            x = cols[name][window]
            assert feats[name]["why"]["current"]["mean"] == pytest.approx(x.mean(), rel=1e-9)
            assert feats[name]["why"]["current"]["count"] == x.size
            contributions = [b["contribution"] for b in feats[name]["why"]["bins"]]
            assert sum(contributions) == pytest.approx(feats[name]["score"], rel=1e-9)
        for name in CATEGORICAL:
            values, counts = np.unique(cols[name][window].astype(str), return_counts=True)
            shares = feats[name]["why"]["current"]["shares"]
            for v, c in zip(values, counts, strict=True):
                assert shares[v] == pytest.approx(c / 6000, abs=1e-12)
            squares = sum(b["contribution"] for b in feats[name]["why"]["bins"])
            assert squares == pytest.approx(feats[name]["score"] ** 2, rel=1e-9)
        top = feats["device"]["why"]["top_bins"][0]
        assert (top["label"], top["current_share"] > top["reference_share"]) == ("d", True)

        # the page and its assets come from the service itself
        status, kind, body = _get(http.port, "/")
        assert (status, kind) == (200, "text/html; charset=utf-8")
        for asset in ("assets/uPlot.iife.min.js", "assets/view.js", "assets/view.css"):
            assert asset.encode() in body
            assert _get(http.port, "/" + asset)[0] == 200

        base = f"http://127.0.0.1:{http.port}"
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []
            page.on("request", lambda r: requested.append(r.url))
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(base + "/")
            page.wait_for_selector('article[data-model="fraud"] section.feature canvas')
            order = feature_order(page, "fraud")
            assert {n for n, _ in order} == set(NUMERICAL + CATEGORICAL)
            assert {n for n, _ in order[: len(DRIFTED)]} == DRIFTED
            assert [d for _, d in order] == [True] * len(DRIFTED) + [False] * (
                len(order) - len(DRIFTED)
            )
            for name in DRIFTED:
                card = f'section.feature[data-feature="{name}"]'
                for chart in (".histogram", ".history"):
                    (size,) = chart_sizes(page, f"{card} {chart}")
                    assert size[0] > 100, (name, chart, size)
                    assert size[1] > 50, (name, chart, size)
            (perf,) = chart_sizes(page, 'article[data-model="fraud"] .performance')
            assert perf[0] > 100
            assert perf[1] > 50
            legend = page.inner_text('article[data-model="fraud"] .performance')
            assert "realized accuracy" in legend
            assert "estimated accuracy" in legend
            assert "label coverage" in legend
            page.select_option('article[data-model="fraud"] select', "roc_auc")
            legend = page.inner_text('article[data-model="fraud"] .performance')
            assert "realized roc_auc" in legend
            assert "estimated roc_auc" in legend
            links = page.eval_on_selector_all("nav a", "els => els.map(a => a.href)")
            assert [u.removeprefix(base) for u in links] == [
                "/metrics", "/api/v1/models", "/api/v1/alerts", "/readyz",
            ]  # fmt: skip
            for url in links:
                assert _get(http.port, url.removeprefix(base))[0] == 200
            page.screenshot(path=str(tmp_path / "web-view.png"), full_page=True)
            # it refreshes by itself
            before = page.get_attribute("body", "data-rendered")
            page.wait_for_function(f"document.body.dataset.rendered !== '{before}'", timeout=15_000)
            # on a phone: one column, nothing wider than the screen
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(300)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(tmp_path / "web-view-phone.png"), full_page=True)
            assert errors == []
            assert requested
            assert all(u.startswith(base + "/") for u in requested), requested
        assert (tmp_path / "web-view.png").stat().st_size > 10_000
    finally:
        stop.set()
        thread.join(15)
        http.stop()
    assert not thread.is_alive()


def test_the_replay_report_is_one_file_that_shows_the_whole_period(tmp_path):
    ev = generate(START)
    rule = {
        "alert": "XDrifted",
        "metric": "driftline_feature_drifted",
        "match": {"feature": "x"},
        "threshold": 1,
        "for": "2m",
    }
    config = write_config(tmp_path, alerts={"rules": [rule]})
    events = write_jsonl(tmp_path / "events.jsonl", ev.prediction_records())
    labels = write_jsonl(tmp_path / "labels.jsonl", ev.label_records())
    out, report = tmp_path / "out.jsonl", tmp_path / "report.html"
    r = run_replay(
        "--config", str(config), "--input", str(events), "--labels", str(labels),
        "--output", str(out), "--report", str(report),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"report written to {report}" in r.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]

    # each line's "why" against numpy on the window's events
    judged = 0
    for line in lines:
        end = _epoch(line["window_end"])
        in_window = (ev.time >= end - 600.0) & (ev.time < end)
        x = line["features"]["x"]
        assert x["verdict"]["threshold"] == x["threshold"]
        if not in_window.any():
            assert x["why"]["current"] is None
            continue
        judged += 1
        assert x["why"]["current"]["mean"] == pytest.approx(ev.x[in_window].mean(), rel=1e-9)
        assert "bins" not in x["why"]  # the lines carry the top bins only
        assert len(x["why"]["top_bins"]) <= 5
        values, counts = np.unique(ev.c[in_window].astype(str), return_counts=True)
        shares = line["features"]["c"]["why"]["current"]["shares"]
        for v, c in zip(values, counts, strict=True):
            assert shares[v] == pytest.approx(c / in_window.sum(), abs=1e-12)
        rule_of = x["verdict"]["rule"]
        assert rule_of == ("min_events" if x["drifted"] is None else "threshold") or (
            rule_of == "min_effect" and x["drifted"] is False
        )
    assert judged > 10

    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "")  # nothing to fetch
    assert "https://" not in html.replace("https://github.com/leeoniya/uPlot", "")
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        requested: list[str] = []
        context.route("**/*", lambda route: (requested.append(route.request.url),
                                             route.continue_() if route.request.url.startswith(
                                                 "file://") else route.abort()))  # fmt: skip
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_selector('article[data-model="fraud"] section.feature canvas')
        order = feature_order(page, "fraud")
        # the last window: x drifted, y and c did not
        assert order[0] == ("x", True)
        assert {n for n, d in order[1:] if not d} == {"y", "c"}
        for chart in (".histogram", ".history"):
            (size,) = chart_sizes(page, f'section.feature[data-feature="x"] {chart}')
            assert size[0] > 100
            assert size[1] > 50
        (timeline,) = chart_sizes(page, ".drift-timeline")
        # as wide as its card (charts are made once their container is in the page)
        assert timeline[0] > 0.9 * page.eval_on_selector(".drift-timeline", "e => e.clientWidth")
        assert timeline[1] > 60  # a row per feature
        (perf,) = chart_sizes(page, ".performance")
        assert perf[0] > 100
        assert perf[1] > 50
        # when x drifted over the whole period, and when the alert would have fired
        drifted_windows = sum(1 for line in lines if line["features"]["x"]["drifted"])
        timeline = page.inner_text('section.feature[data-feature="x"] .timeline')
        assert timeline.startswith(f"drifted in {drifted_windows} of ")
        alerts = page.inner_text("#alerts")
        assert "XDrifted" in alerts
        assert "firing" in alerts
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(tmp_path / "report-phone.png"), full_page=True)
        assert errors == []
        assert requested == [report.as_uri()]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_web_view_shows_versions_side_by_side(tmp_path):
    """A champion and a shadow challenger answering the same requests: the page's table
    shows each version's own window, its realized accuracy as scikit-learn computes it on
    its own predictions, and which version serves."""
    from sklearn import metrics as skm

    from consumers.decoding import DecodedBatch, GroundTruthBatch
    from monitor.events import EventBatch

    rng = np.random.default_rng(15)
    ref = tmp_path / "ref.csv"
    x_ref = rng.normal(size=3000)
    ref.write_text(
        "x,prediction\n" + "\n".join(f"{a},{1 / (1 + np.exp(-a))}" for a in x_ref.tolist()) + "\n"
    )
    config = DriftlineConfig.model_validate(
        {
            "http": {"port": 0},
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "0s"},
            "models": [{"name": "fraud", "reference": {"path": str(ref)}}],
        }
    )
    service = Service(config)
    n = 1500
    ids = [f"r{i}" for i in range(n)]
    t = T0 + np.arange(n) * 0.1
    x = rng.normal(size=n)
    truth = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    scores = {
        "2026-11-01": 1 / (1 + np.exp(-(x + rng.normal(0, 1.5, n)))),
        "2026-12-01": 1 / (1 + np.exp(-(2 * x + rng.normal(0, 0.5, n)))),
    }
    now = float(t[-1])
    for lo in range(0, n, 250):
        s = slice(lo, lo + 250)
        for version, p in scores.items():
            service.handle(
                DecodedBatch(
                    batches={
                        "fraud": EventBatch(
                            model="fraud",
                            event_time=t[s],
                            event_id=ids[s],
                            model_version=np.full(250, version, dtype=object),
                            numerical={"x": x[s]},
                            categorical={},
                            score=p[s],
                            label=np.full(250, None, dtype=object),
                            latency_ms=np.full(250, np.nan),
                        )
                    }
                ),
                now,
            )
    y_true = np.empty(n, dtype=object)
    y_true[:] = [str(v) for v in truth]
    service.handle_ground_truth(GroundTruthBatch(labels={"fraud": (ids, y_true, t)}), now)
    service.apply_panes(0, service.flush(0, now), now)
    ev = service.evaluation("fraud")
    assert ev is not None
    inside = (t >= ev.window_start) & (t < ev.window_end)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    try:
        with chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{http.port}/")
            page.wait_for_selector('article[data-model="fraud"] .versions tr[data-version]')
            rows = page.eval_on_selector_all(
                ".versions tr[data-version]",
                "rows => rows.map(r => [...r.children].map(td => td.textContent))",
            )
            headers = page.eval_on_selector_all(
                ".versions th", "ths => ths.map(th => th.textContent)"
            )
            page.screenshot(path=str(tmp_path / "versions.png"), full_page=True)
    finally:
        http.stop()
    assert errors == []
    assert headers[:4] == ["version", "events", "drifted features", "label coverage"]
    accuracy = headers.index("accuracy")
    assert [r[0] for r in rows] == ["2026-11-01 (serving)", "2026-12-01"]
    for row, p in zip(rows, scores.values(), strict=True):
        assert row[1] == str(int(inside.sum()))
        want = skm.accuracy_score(truth[inside], p[inside] >= 0.5)
        assert float(row[accuracy]) == pytest.approx(want, abs=5e-4)  # shown to 3 digits
