// The driftline web view and replay report: one script for both. Live, it reads the JSON
// API every REFRESH_MS; in a report, the data is embedded in the page (#driftline-data).
// Charts are drawn by uPlot (shipped beside this file); nothing is fetched from elsewhere.
(function () {
  "use strict";
  var REFRESH_MS = 5000;
  var COLORS = { ref: "#7a869a", cur: "#d9480f", score: "#1c7ed6", limit: "#c92a2a",
    series: ["#1c7ed6", "#2b8a3e", "#ae3ec9", "#e67700", "#0c8599", "#5c940d"] };
  var plots = [];

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function fmt(x) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (Number.isInteger(x) && Math.abs(x) < 1e9) return String(x);
    var a = Math.abs(x);
    if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
    return x.toPrecision(3).replace(/\.?0+$/, "");
  }

  function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + "%"; }

  function pctTick(x) { return Math.round(100 * x) + "%"; }

  function time(t) {
    return t === null || t === undefined ? "–" : new Date(t * 1000).toISOString().slice(0, 19) + "Z";
  }

  // How far past its threshold a feature is: drifted first, then the closest to drifting.
  function severity(f) {
    var v = f.verdict || {};
    var rank = f.drifted === true ? 2 : f.drifted === false ? 1 : 0;
    var r = 0;
    if (v.compared === "pvalue" && f.pvalue !== null && v.threshold) r = v.threshold / Math.max(f.pvalue, 1e-300);
    else if (f.score !== null && v.threshold) r = f.score / v.threshold;
    return [rank, r];
  }

  function bySeverity(a, b) {
    var x = severity(a), y = severity(b);
    return y[0] - x[0] || y[1] - x[1] || (a.name < b.name ? -1 : 1);
  }

  function width(node) { return Math.max(240, node.clientWidth || 320); }

  function utc(ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }

  // Charts are sized to their container, so they are made once it is in the page.
  var pending = [];

  function plot(container, opts, data) {
    if (!container.isConnected) { pending.push([container, opts, data]); return null; }
    opts.width = width(container);
    opts.tzDate = utc;  // time axes in UTC, as every time written on the page
    var p = new uPlot(opts, data, container);
    plots.push([p, container]);
    return p;
  }

  function drawPending() {
    var todo = pending;
    pending = [];
    todo.forEach(function (c) { plot(c[0], c[1], c[2]); });
  }

  function histogram(container, bins) {
    var x = bins.map(function (_, i) { return i; });
    var labels = bins.map(function (b) { return b.label; });
    // a numerical bin's tick is its lower edge (the legend shows its whole range)
    var ticks = bins.map(function (b) {
      if (!("low" in b)) return b.label;
      return b.low === null ? "−∞" : fmt(b.low);
    });
    var bars = function (align) { return uPlot.paths.bars({ size: [0.42, 60], align: align }); };
    plot(container, {
      height: 170,
      legend: { show: true },
      cursor: { points: { show: false } },
      scales: { x: { time: false, range: [-0.6, bins.length - 0.4] }, y: { range: [0, null] } },
      axes: [
        { values: function (u, splits) { return splits.map(function (i) { return ticks[i] || ""; }); },
          incrs: [1, 2, 5], space: 34, font: "11px system-ui" },
        { values: function (u, splits) { return splits.map(pctTick); }, size: 44, font: "11px system-ui" },
      ],
      series: [
        { label: "bin", value: function (u, i) { return i === null ? "–" : labels[i]; } },
        { label: "reference", fill: COLORS.ref, stroke: COLORS.ref, paths: bars(-1), points: { show: false },
          value: function (u, v) { return pct(v); } },
        { label: "current", fill: COLORS.cur, stroke: COLORS.cur, paths: bars(1), points: { show: false },
          value: function (u, v) { return pct(v); } },
      ],
    }, [x, bins.map(function (b) { return b.reference_share; }),
      bins.map(function (b) { return b.current_share; })]);
  }

  function scoreHistory(container, name, history, compared) {
    var t = [], score = [], limit = [], flagged = [];
    history.forEach(function (p) {
      var f = p.features && p.features[name];
      if (!f || p.window_end === null) return;
      t.push(p.window_end); score.push(f[0]); limit.push(f[1]);
      flagged.push(f[2] === true ? f[0] : null);
    });
    if (t.length === 0) { container.appendChild(el("p", { class: "muted", text: "no evaluations yet" })); return; }
    plot(container, {
      height: 150,
      scales: { y: { distr: compared === "pvalue" ? 3 : 1 } },
      axes: [{ font: "11px system-ui" }, { size: 48, font: "11px system-ui", values: function (u, s) { return s.map(fmt); } }],
      series: [
        {},
        { label: compared === "pvalue" ? "p-value" : "score", stroke: COLORS.score, width: 2, value: function (u, v) { return fmt(v); } },
        { label: "threshold", stroke: COLORS.limit, dash: [6, 4], width: 1.5, points: { show: false }, value: function (u, v) { return fmt(v); } },
        { label: "drifted", stroke: COLORS.cur, width: 0, points: { show: true, size: 7, fill: COLORS.cur }, paths: function () { return null; } },
      ],
    }, [t, score, limit, flagged]);
  }

  // the metric shown per model (kept across refreshes)
  var chosen = {};
  var PREFERRED = ["accuracy", "roc_auc", "f1", "rmse", "mae", "r2"];

  function performance(box, model, history) {
    var metrics = [];
    history.forEach(function (p) {
      Object.keys(p.performance || {}).concat(Object.keys(p.estimated || {})).forEach(function (k) {
        if (metrics.indexOf(k) < 0) metrics.push(k);
      });
    });
    if (metrics.length === 0) {
      box.appendChild(el("p", { class: "muted", text: "no performance metrics (no labels and no scores)" }));
      return;
    }
    metrics.sort();
    var metric = chosen[model];
    if (metrics.indexOf(metric) < 0) {
      metric = PREFERRED.filter(function (m) { return metrics.indexOf(m) >= 0; })[0] || metrics[0];
    }
    var select = el("select", { "aria-label": "metric" }, metrics.map(function (m) {
      var o = el("option", { value: m, text: m });
      if (m === metric) o.selected = true;
      return o;
    }));
    var chart = el("div", { class: "chart performance" });
    box.appendChild(el("label", { class: "muted" }, [document.createTextNode("metric "), select]));
    box.appendChild(chart);
    var t = [], realized = [], estimated = [], coverage = [];
    history.forEach(function (p) {
      if (p.window_end === null) return;
      t.push(p.window_end);
      realized.push(p.performance && p.performance[metric] !== undefined ? p.performance[metric] : null);
      estimated.push(p.estimated && p.estimated[metric] !== undefined ? p.estimated[metric] : null);
      coverage.push(p.label_coverage);
    });
    var num = function (u, v) { return fmt(v); };
    plot(chart, {
      height: 200,
      scales: { share: { range: [0, 1] } },
      series: [{},
        { label: "realized " + metric, stroke: COLORS.series[0], width: 2, value: num },
        { label: "estimated " + metric, stroke: COLORS.series[2], width: 2, dash: [6, 4], value: num },
        { label: "label coverage", stroke: COLORS.ref, width: 1, scale: "share", value: function (u, v) { return pct(v); } }],
      axes: [{ font: "11px system-ui" }, { size: 48, font: "11px system-ui", values: function (u, s) { return s.map(fmt); } },
        { scale: "share", side: 1, size: 48, grid: { show: false }, font: "11px system-ui", values: function (u, s) { return s.map(pctTick); } }],
    }, [t, realized, estimated, coverage]);
    select.addEventListener("change", function () {
      chosen[model] = select.value;
      box.textContent = "";
      plots = plots.filter(function (q) {
        if (q[1] !== chart) return true;
        q[0].destroy();
        return false;
      });
      box.appendChild(el("h4", { text: "realized vs estimated performance, label coverage" }));
      performance(box, model, history);
    });
  }

  // One row per feature, a mark at each window where it drifted: when each feature drifted.
  function driftTimeline(container, features, history) {
    var names = features.map(function (f) { return f.name; });
    var t = [], rows = names.map(function () { return []; });
    history.forEach(function (p) {
      if (p.window_end === null) return;
      t.push(p.window_end);
      names.forEach(function (n, i) {
        var f = p.features && p.features[n];
        rows[i].push(f && f[2] === true ? names.length - i : null);
      });
    });
    if (t.length === 0) { container.appendChild(el("p", { class: "muted", text: "no evaluations yet" })); return; }
    plot(container, {
      height: 60 + 24 * names.length,
      legend: { show: false },
      scales: { y: { range: [0.5, names.length + 0.5] } },
      axes: [{ font: "11px system-ui" }, { size: 90, font: "11px system-ui", incrs: [1], space: 12,
        values: function (u, s) { return s.map(function (v) { return names[names.length - v] || ""; }); } }],
      series: [{}].concat(names.map(function (n) {
        return { label: n, stroke: COLORS.cur, width: 0, points: { show: true, size: 8, fill: COLORS.cur },
          paths: function () { return null; } };
      })),
    }, [t].concat(rows));
  }

  function summaryTable(why) {
    var ref = why.reference, cur = why.current || {};
    var rows = [];
    if (ref && ref.quantiles) {
      rows.push(["mean", ref.mean, cur.mean], ["std", ref.std, cur.std]);
      Object.keys(ref.quantiles).forEach(function (q) {
        rows.push(["q" + q, ref.quantiles[q], cur.quantiles ? cur.quantiles[q] : null]);
      });
      rows = rows.map(function (r) { return [r[0], fmt(r[1]), fmt(r[2])]; });
    } else if (ref && ref.shares) {
      Object.keys(ref.shares).forEach(function (c) {
        rows.push([c, pct(ref.shares[c]), pct(cur.shares ? cur.shares[c] : null)]);
      });
    }
    rows.push(["values", fmt(ref ? ref.count : null), fmt(cur.count)]);
    return el("table", {}, [
      el("thead", {}, [el("tr", {}, [el("th", { text: "" }), el("th", { class: "num", text: "reference" }), el("th", { class: "num", text: "current" })])]),
      el("tbody", {}, rows.map(function (r) {
        return el("tr", {}, [el("td", { text: r[0] }), el("td", { class: "num", text: r[1] }), el("td", { class: "num", text: r[2] })]);
      })),
    ]);
  }

  function movers(why) {
    var top = why.top_bins || [];
    if (top.length === 0) return el("p", { class: "muted", text: "no bin moved the score" });
    var unit = why.contributions_add_up_to === "score_squared" ? " (of score²)" : why.contributions_add_up_to === "max" ? " (largest gap)" : "";
    return el("table", { class: "movers" }, [
      el("thead", {}, [el("tr", {}, [el("th", { text: "bin" }), el("th", { class: "num", text: "ref" }),
        el("th", { class: "num", text: "current" }), el("th", { class: "num", text: "contribution" + unit })])]),
      el("tbody", {}, top.map(function (b) {
        return el("tr", {}, [el("td", { text: b.label }), el("td", { class: "num", text: pct(b.reference_share) }),
          el("td", { class: "num", text: pct(b.current_share) }), el("td", { class: "num", text: fmt(b.contribution) })]);
      })),
    ]);
  }

  function ruleText(f) {
    var v = f.verdict || {};
    var stat = v.compared === "pvalue" ? "p-value " + fmt(f.pvalue) : f.method + " " + fmt(f.score);
    if (v.rule === "min_events") return "no verdict: " + v.values + " values, fewer than min_events " + v.min_events;
    if (v.rule === "min_effect") return stat + " passes the " + v.threshold_kind + " threshold " + fmt(v.threshold) + " but is under min_effect " + fmt(v.min_effect);
    var op = v.compared === "pvalue" ? (f.drifted ? "<" : "≥") : (f.drifted ? "≥" : "<");
    return stat + " " + op + " " + v.threshold_kind + " threshold " + fmt(v.threshold) + (f.drifted && v.compared !== "pvalue" ? " and ≥ min_effect " + fmt(v.min_effect) : "");
  }

  // a long replay's report charts spans of consecutive windows (``windows`` each)
  function span(history) {
    return history.reduce(function (n, p) { return Math.max(n, p.windows || 1); }, 1);
  }

  function driftCount(name, history) {
    var judged = 0, drifted = 0, first = null, last = null, k = span(history);
    history.forEach(function (p) {
      var f = p.features && p.features[name];
      if (!f || f[2] === null) return;
      judged += 1;
      if (f[2] === true) { drifted += 1; if (first === null) first = p.window_end; last = p.window_end; }
    });
    return el("p", { class: "muted timeline", text: "drifted in " + drifted + " of " + judged +
      (k > 1 ? " spans of up to " + k + " windows" : " windows") +
      (first !== null ? ", first " + time(first) + ", last " + time(last) : "") });
  }

  function feature(f, history, report) {
    var badge = f.drifted === true ? el("span", { class: "badge drift", text: "drift" })
      : f.drifted === false ? el("span", { class: "badge ok", text: "ok" }) : el("span", { class: "badge", text: "no verdict" });
    var card = el("section", { class: "card feature", "data-feature": f.name, "data-drifted": String(f.drifted === true) }, [
      el("h3", {}, [document.createTextNode(f.name + " "), badge]),
      el("p", { class: "why", text: ruleText(f) }),
    ]);
    var why = f.why;
    if (why && why.bins) {
      card.appendChild(el("h4", { text: "reference vs current (share of values per bin)" }));
      var h = el("div", { class: "chart histogram" });
      card.appendChild(h);
      histogram(h, why.bins);
    }
    card.appendChild(el("h4", { text: (f.verdict && f.verdict.compared === "pvalue" ? "p-value" : "score") +
      (report ? " over the period" : " over recent windows") }));
    var s = el("div", { class: "chart history" });
    card.appendChild(s);
    scoreHistory(s, f.name, history, f.verdict ? f.verdict.compared : "score");
    if (report) card.appendChild(driftCount(f.name, history));
    if (why) {
      card.appendChild(el("h4", { text: "top movers" }));
      card.appendChild(el("div", { class: "scroll" }, [movers(why)]));
      card.appendChild(el("h4", { text: "summary" }));
      card.appendChild(el("div", { class: "scroll" }, [summaryTable(why)]));
    }
    return card;
  }

  // each live version's own window beside the others (champion, shadow, canary)
  function versions(ev) {
    var names = Object.keys(ev.versions).sort();
    var seen = [];
    names.forEach(function (v) {
      Object.keys((ev.versions[v].performance || {}).realized || {}).forEach(function (k) {
        if (seen.indexOf(k) < 0) seen.push(k);
      });
    });
    var metrics = PREFERRED.filter(function (k) { return seen.indexOf(k) >= 0; }).slice(0, 3);
    var cols = [["version", function (v) { return v + (v === ev.serving_version ? " (serving)" : ""); }],
      ["events", function (v) { return String(ev.versions[v].window.events); }],
      ["drifted features", function (v) { return String((ev.versions[v].drifted_features || []).length); }],
      ["label coverage", function (v) { return pct(ev.versions[v].performance.label_coverage); }]]
      .concat(metrics.map(function (k) {
        return [k, function (v) { return fmt((ev.versions[v].performance.realized || {})[k]); }];
      }));
    return el("div", { class: "card versions" }, [el("h4", { text: "versions side by side (own windows)" }),
      el("div", { class: "scroll" }, [el("table", {}, [
        el("thead", {}, [el("tr", {}, cols.map(function (c) { return el("th", { text: c[0] }); }))]),
        el("tbody", {}, names.map(function (v) {
          return el("tr", { "data-version": v }, cols.map(function (c) { return el("td", { text: c[1](v) }); }));
        })),
      ])])]);
  }

  function model(m, report) {
    var ev = m.evaluation, history = m.history || [];
    var box = el("article", { class: "model", "data-model": m.model }, [el("h2", { text: "model " + m.model })]);
    if (!ev) {
      box.appendChild(el("p", { class: "card muted", text: m.evaluated_here === false
        ? "evaluated by another instance of the fleet" : "no window evaluated yet" }));
      return box;
    }
    var w = ev.window || {};
    var drifted = ev.drifted_features || [];
    box.appendChild(el("p", { class: "card", text: "window " + (w.start_time || time(w.start)) + " to " +
      (w.end_time || time(w.end)) + ", " + w.events + " events; " + drifted.length + " of " +
      ev.features.length + " features drifted" + (drifted.length ? " (" + drifted.join(", ") + ")" : "") }));
    var perf = el("div", { class: "card" }, [el("h4", { text: "realized vs estimated performance, label coverage" })]);
    box.appendChild(perf);
    performance(perf, m.model, history);
    if (ev.versions && Object.keys(ev.versions).length) box.appendChild(versions(ev));
    var sorted = ev.features.slice().sort(bySeverity);
    var timeline = el("div", { class: "chart drift-timeline" });
    box.appendChild(el("div", { class: "card" }, [el("h4", { text: "when each feature drifted" +
      (!report ? " (recent windows)" : span(history) > 1 ? " (the period, in spans of up to " +
        span(history) + " windows)" : " (every window of the period)") }), timeline]));
    driftTimeline(timeline, sorted, history);
    var grid = el("div", { class: "features" });
    box.appendChild(grid);
    sorted.forEach(function (f) { grid.appendChild(feature(f, history, report)); });
    return box;
  }

  function alertTable(title, rows, cols) {
    var box = el("div", { class: "card" }, [el("h2", { text: title })]);
    if (rows.length === 0) { box.appendChild(el("p", { class: "muted", text: "none" })); return box; }
    box.appendChild(el("div", { class: "scroll" }, [el("table", {}, [
      el("thead", {}, [el("tr", {}, cols.map(function (c) { return el("th", { text: c[0] }); }))]),
      el("tbody", {}, rows.map(function (r) {
        return el("tr", {}, cols.map(function (c) { return el("td", { text: c[1](r) }); }));
      })),
    ])]));
    return box;
  }

  function render(data) {
    plots.forEach(function (p) { p[0].destroy(); });
    plots = [];
    var report = data.mode === "report";
    var alerts = document.getElementById("alerts");
    alerts.textContent = "";
    if (report) {
      alerts.appendChild(alertTable("alerts that would have fired", data.alert_changes || [], [
        ["at", function (a) { return a.at; }], ["alert", function (a) { return a.alert; }],
        ["state", function (a) { return a.state; }], ["model", function (a) { return a.labels.model || ""; }],
        ["feature", function (a) { return a.labels.feature || ""; }],
        ["value", function (a) { return fmt(a.value); }]]));
    } else {
      alerts.appendChild(alertTable("firing alerts", (data.alerts || []).filter(function (a) { return a.state === "firing"; }), [
        ["alert", function (a) { return a.labels.alertname || a.name || ""; }],
        ["model", function (a) { return a.labels.model || ""; }],
        ["feature", function (a) { return a.labels.feature || ""; }],
        ["severity", function (a) { return a.labels.severity || ""; }],
        ["since", function (a) { return a.startsAt || a.active_since || ""; }]]));
    }
    var models = document.getElementById("models");
    models.textContent = "";
    pending = [];
    data.models.forEach(function (m) { models.appendChild(model(m, report)); });
    drawPending();
    document.getElementById("status").textContent = report
      ? "replay report, " + data.period + ", written " + data.generated_at
      : "updated " + new Date().toISOString().slice(11, 19) + "Z, every " + REFRESH_MS / 1000 + " s";
    document.body.setAttribute("data-rendered", String(Date.now()));
  }

  function getJSON(path) {
    return fetch(path, { headers: { accept: "application/json" } }).then(function (r) {
      if (!r.ok) throw new Error(path + ": HTTP " + r.status);
      return r.json();
    });
  }

  // each model's history as read so far: a refresh asks only for the windows from the
  // newest one held (which may have been evaluated again) onwards
  var histories = {};

  function fetchModel(name) {
    var held = histories[name] || [];
    var since = held.length ? held[held.length - 1].window_end : null;
    var url = "api/v1/models/" + encodeURIComponent(name) + (since === null ? "" : "?history_since=" + since);
    return getJSON(url).then(function (m) {
      var got = m.history || [];
      if (since !== null) {
        if (got.length === 0 || got[0].window_end !== since) {
          delete histories[name]; // the service's history started again: read it whole
          return fetchModel(name);
        }
        got = held.filter(function (p) { return p.window_end < since; }).concat(got);
      }
      var limit = m.history_limit ? m.history_limit.points : got.length;
      histories[name] = m.history = got.slice(-limit);
      return m;
    });
  }

  function refresh() {
    Promise.all([getJSON("api/v1/models"), getJSON("api/v1/alerts")]).then(function (got) {
      return Promise.all(got[0].models.map(function (m) { return fetchModel(m.model); })).then(function (models) {
        render({ mode: "live", models: models, alerts: got[1].alerts });
      });
    }).catch(function (e) {
      document.getElementById("status").textContent = "cannot read the API: " + e.message;
    }).then(function () { setTimeout(refresh, REFRESH_MS); });
  }

  function links() {
    var nav = document.getElementById("links");
    [["metrics", "metrics"], ["api/v1/models", "API: models"], ["api/v1/alerts", "API: alerts"], ["readyz", "readiness"]]
      .forEach(function (l) { nav.appendChild(el("a", { href: l[0], text: l[1] })); });
  }

  window.addEventListener("resize", function () {
    plots.forEach(function (p) { p[0].setSize({ width: width(p[1]), height: p[0].height }); });
  });

  var embedded = document.getElementById("driftline-data");
  if (embedded) {
    render(JSON.parse(embedded.textContent));
  } else {
    links();
    refresh();
  }
})();
