// Keeps the operator dashboard current: polls the JSON view model and redraws figures, bars, tables and
// the chart in place. Text only ever reaches the page through textContent / setAttribute, never as HTML:
// task results are LLM output and untrusted. Without this script the page is a complete static snapshot.
(function () {
  "use strict";

  var root = document.querySelector("[data-dashboard]");
  if (!root || !window.fetch) {
    return;
  }
  var url = root.getAttribute("data-url");
  var pollMs = Math.max(1, parseInt(root.getAttribute("data-poll-seconds"), 10) || 3) * 1000;
  var liveBox = root.querySelector("[data-live]");
  var liveText = root.querySelector("[data-live-text]");
  var SVG_NS = "http://www.w3.org/2000/svg";
  var timer = null;
  var inFlight = false;

  function setLive(state, message) {
    liveBox.className = "live live-" + state;
    liveText.textContent = message;
  }

  function each(selector, fn) {
    Array.prototype.forEach.call(root.querySelectorAll(selector), fn);
  }

  function applyFigures(figures) {
    each("[data-figure]", function (el) {
      var key = el.getAttribute("data-figure");
      if (Object.prototype.hasOwnProperty.call(figures, key) && el.textContent !== figures[key]) {
        el.textContent = figures[key];
      }
    });
  }

  function applyFlags(flags) {
    each("[data-state]", function (el) {
      var on = Boolean(flags[el.getAttribute("data-state")]);
      el.classList.toggle("state-on", on);
      el.classList.toggle("state-off", !on);
    });
    each("[data-show]", function (el) {
      el.hidden = !flags[el.getAttribute("data-show")];
    });
  }

  function applyBars(bars) {
    each("[data-bar]", function (el) {
      var bar = bars[el.getAttribute("data-bar")];
      if (bar) {
        el.max = bar.max;
        el.value = bar.value;
      }
    });
  }

  function buildRow(row) {
    var tr = document.createElement("tr");
    tr.className = row.cls || "";
    row.cells.forEach(function (cell) {
      var td = document.createElement("td");
      td.className = cell.cls || "";
      if (cell.title) {
        td.setAttribute("title", cell.title);
      }
      if (cell.badge) {
        var span = document.createElement("span");
        span.className = cell.badge;
        span.textContent = cell.text;
        td.appendChild(span);
      } else {
        td.textContent = cell.text;
      }
      tr.appendChild(td);
    });
    return tr;
  }

  function applyTables(tables) {
    each("[data-table]", function (tbody) {
      var rows = tables[tbody.getAttribute("data-table")];
      if (!rows) {
        return;
      }
      var fragment = document.createDocumentFragment();
      if (rows.length === 0) {
        var tr = document.createElement("tr");
        var td = document.createElement("td");
        tr.className = "empty";
        td.colSpan = parseInt(tbody.getAttribute("data-columns"), 10) || 1;
        td.textContent = tbody.getAttribute("data-empty") || "";
        tr.appendChild(td);
        fragment.appendChild(tr);
      } else {
        rows.forEach(function (row) {
          fragment.appendChild(buildRow(row));
        });
      }
      tbody.replaceChildren(fragment);
    });
  }

  function svg(name, attrs, text) {
    var el = document.createElementNS(SVG_NS, name);
    Object.keys(attrs).forEach(function (key) {
      el.setAttribute(key, attrs[key]);
    });
    if (text !== undefined) {
      el.textContent = text;
    }
    return el;
  }

  // Both kinds of chart: the horizontal grid with its value labels, and the x-axis labels (anchored
  // as the server says, else centred).
  function axes(chart) {
    var grid = svg("g", { class: "grid" });
    chart.grid.forEach(function (line) {
      grid.appendChild(svg("line", { x1: chart.plot.left, x2: chart.plot.right, y1: line.y, y2: line.y }));
      grid.appendChild(
        svg("text", {
          class: "axis-label", x: line.label_x, y: line.y, "text-anchor": "end", "dominant-baseline": "middle",
        }, line.label)
      );
    });
    var xLabels = svg("g", { class: "x-labels" });
    chart.x_labels.forEach(function (label) {
      xLabels.appendChild(
        svg("text", {
          class: "axis-label", x: label.x, y: label.y, "text-anchor": label.anchor || "middle",
        }, label.text)
      );
    });
    return [grid, xLabels];
  }

  // One group per series: its polyline and its dots (each with a tooltip).
  function lines(chart, dotClass) {
    return chart.series.map(function (series) {
      var group = svg("g", { class: series.cls });
      group.appendChild(svg("polyline", { class: "line", points: series.points }));
      series.dots.forEach(function (dot) {
        var circle = svg("circle", { class: dotClass(dot), cx: dot.x, cy: dot.y, r: dot.r });
        circle.appendChild(svg("title", {}, dot.title));
        group.appendChild(circle);
      });
      return group;
    });
  }

  function applyChart(chart) {
    var target = root.querySelector("[data-chart]");
    if (!target || !chart) {
      return;
    }
    var parts = axes(chart);
    parts.push.apply(parts, lines(chart, function (dot) { return dot.cls; }));
    if (chart.empty) {
      parts.push(
        svg("text", { class: "chart-empty", x: chart.center.x, y: chart.center.y, "text-anchor": "middle" },
          "No trained version yet.")
      );
    }
    target.setAttribute("viewBox", "0 0 " + chart.width + " " + chart.height);
    target.replaceChildren.apply(target, parts);
  }

  function applyTimeCharts(charts) {
    (charts || []).forEach(function (chart) {
      var target = root.querySelector('[data-timechart="' + chart.name + '"]');
      if (!target) {
        return;
      }
      var parts = axes(chart);
      var events = svg("g", { class: "events" });
      chart.events.forEach(function (event) {
        var group = svg("g", { class: event.cls });
        group.appendChild(svg("title", {}, event.title));
        group.appendChild(svg("line", { x1: event.x, x2: event.x, y1: event.y1, y2: event.y2 }));
        group.appendChild(
          svg("text", { class: "event-label", x: event.x, y: event.label_y, "text-anchor": event.anchor }, event.text)
        );
        events.appendChild(group);
      });
      parts.push(events);
      parts.push.apply(parts, lines(chart, function () { return "dot"; }));
      if (chart.empty) {
        parts.push(
          svg("text", { class: "chart-empty", x: chart.center.x, y: chart.center.y, "text-anchor": "middle" },
            "No tasks in this window.")
        );
      }
      target.setAttribute("data-points", chart.points);
      target.replaceChildren.apply(target, parts);
    });
  }

  function apply(data) {
    applyFigures(data.figures);
    applyFlags(data.flags);
    applyBars(data.bars);
    applyTables(data.tables);
    applyChart(data.chart);
    applyTimeCharts(data.timecharts);
    root.setAttribute("data-updated", data.generated_at);
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, pollMs);
  }

  function refresh() {
    if (document.hidden || inFlight) {
      schedule();
      return;
    }
    inFlight = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          throw new Error("session");
        }
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (data) {
        apply(data);
        setLive("on", "Live · updated " + data.figures.generated_at + " · every " + pollMs / 1000 + " s");
        schedule();
      })
      .catch(function (error) {
        if (error.message === "session") {
          // Polling cannot log back in; stop and say so rather than hammer the server.
          setLive("off", "Logged out: reload the page to sign in again.");
          return;
        }
        setLive("off", "Connection lost (" + error.message + "), retrying…");
        schedule();
      })
      .finally(function () {
        inFlight = false;
      });
  }

  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  setLive("on", "Live · refreshing every " + pollMs / 1000 + " s");
  schedule();
})();
