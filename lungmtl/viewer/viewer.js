/* lungmtl slice viewer: hand-written vanilla JavaScript on <canvas>, inlined into report.html
 * with its data (a JSON block of data: URLs), so the report opens offline from one file and
 * fetches nothing. See lungmtl/viewer/__init__.py for what is embedded.
 *
 * Moving through the slices: mouse wheel over the image, arrow keys (up/right: one slice up,
 * towards the head; down/left: one slice down), Page Up/Down (10 slices), Home/End, the slider,
 * a click on the plot, a most-affected slice link, a row of the slice table, or #z=K in the URL.
 * Keys o, l, g, w toggle the infection overlay, the lung outline, Grad-CAM and the window.
 */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("lungmtl-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var view = $("view"), ctx = view.getContext("2d");
  var plot = $("plot"), pctx = plot.getContext("2d");
  var slider = $("slider"), caption = $("caption");
  var boxes = { inf: $("show-infection"), outline: $("show-outline"), cam: $("show-cam") };
  var opacity = $("opacity"), windowSel = $("window");
  var rows = document.querySelectorAll("#slice-table tbody tr");
  var camSlices = Object.keys(D.cam).map(Number).sort(function (a, b) { return a - b; });
  var state = { k: -1, win: D.windows[0][0] };
  var MARGIN = { l: 46, r: 58, t: 12, b: 30 };
  var CACHE_MAX = 48;
  var cache = new Map();
  var drawToken = 0;
  var firstDrawn = false;

  function image(key, src) {
    var im = cache.get(key);
    if (im) {
      cache.delete(key);
    } else {
      im = new Image();
      im.src = src;
    }
    cache.set(key, im);  // most recent last
    while (cache.size > CACHE_MAX) cache.delete(cache.keys().next().value);
    return im;
  }

  function ready(im) { return im.complete && im.naturalWidth > 0; }

  function fmt(v, digits) { return v === null || v === undefined ? "n/a" : v.toFixed(digits); }

  function layers(k) {
    var out = [{ im: image("ct:" + state.win + ":" + k, D.ct[state.win][k]) }];
    var alpha = Number(opacity.value) / 100;
    if (boxes.inf.checked && D.infection[k]) {
      out.push({ im: image("inf:" + k, D.infection[k]), alpha: alpha });
    }
    if (boxes.cam.checked && D.cam[k]) {  // over the infection: asked for, so on top
      var b = D.cam[k].box;
      out.push({ im: image("cam:" + k, D.cam[k].src), alpha: alpha, box: b });
    }
    if (boxes.outline.checked && D.outline[k]) {
      out.push({ im: image("lung:" + k, D.outline[k]), alpha: Math.max(alpha, 0.6) });
    }
    return out;
  }

  function paint(k, parts, token) {
    if (token !== drawToken) return;  // another slice was asked for meanwhile
    ctx.globalAlpha = 1;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, view.width, view.height);
    parts.forEach(function (p) {
      ctx.globalAlpha = p.alpha === undefined ? 1 : p.alpha;
      ctx.imageSmoothingEnabled = Boolean(p.box);
      if (p.box) {
        ctx.drawImage(p.im, p.box[2], p.box[0], p.box[3] - p.box[2], p.box[1] - p.box[0]);
      } else {
        ctx.drawImage(p.im, 0, 0, view.width, view.height);
      }
    });
    ctx.globalAlpha = 1;
    view.dataset.slice = String(k);
    view.dataset.drawn = String(token);
    if (!firstDrawn) {
      firstDrawn = true;
      if (window.performance && performance.mark) performance.mark("lungmtl-first-slice");
    }
  }

  function render() {
    var k = state.k, token = ++drawToken;
    var parts = layers(k);
    var waiting = parts.filter(function (p) { return !ready(p.im); });
    if (!waiting.length) {
      paint(k, parts, token);
    } else {
      Promise.all(waiting.map(function (p) { return p.im.decode(); })).then(
        function () { paint(k, parts, token); },
        function (err) { console.error("lungmtl viewer: cannot decode slice " + k, err); }
      );
    }
    for (var d = 1; d <= 3; d++) {  // neighbours, so that scrolling does not wait
      [k - d, k + d].forEach(function (j) {
        if (j >= 0 && j < D.n) image("ct:" + state.win + ":" + j, D.ct[state.win][j]);
      });
    }
  }

  function describe(k) {
    var lines = [];
    lines.push("slice z=" + k + " of 0\u2013" + (D.n - 1) + " \u00b7 id " + D.ids[k]);
    lines.push(D.z_mm ? "position " + D.z_mm[k].toFixed(1) + " mm (S)" : "position: no geometry");
    lines.push("P(infected) " + fmt(D.p[k], 3) + (D.positive[k] ? " \u00b7 positive" : " \u00b7 negative"));
    var area = D.inf_mm2 ? fmt(D.inf_mm2[k], 1) + " mm\u00b2 (" + D.inf_px[k] + " px)" : D.inf_px[k] + " px";
    var pct = D.inf_pct[k] === null ? "share of lung unknown (the derived lung misses the outline)"
      : fmt(D.inf_pct[k], 2) + " % of lung";
    lines.push("infected area " + area + " \u00b7 " + pct);
    if (camSlices.length) {
      lines.push(D.cam[k] ? "Grad-CAM computed on this slice" : "no Grad-CAM on this slice");
    }
    return lines;
  }

  function goTo(k) {
    k = Math.max(0, Math.min(D.n - 1, Math.round(Number(k))));
    if (!isFinite(k)) return;
    var moved = k !== state.k;
    if (moved && rows[state.k]) rows[state.k].classList.remove("current");
    state.k = k;
    slider.value = String(k);
    caption.replaceChildren.apply(caption, describe(k).map(function (t) {
      var div = document.createElement("div");
      div.textContent = t;
      return div;
    }));
    caption.dataset.slice = String(k);
    if (rows[k]) rows[k].classList.add("current");
    render();
    drawPlot();
  }

  // ---------------------------------------------------------------- plot along z

  function plotGeometry() {
    var w = plot.clientWidth, h = plot.clientHeight;
    return { w: w, h: h, pw: w - MARGIN.l - MARGIN.r, ph: h - MARGIN.t - MARGIN.b };
  }

  function xOf(g, k) { return MARGIN.l + ((k + 0.5) / D.n) * g.pw; }

  function drawPlot() {
    var g = plotGeometry(), ratio = window.devicePixelRatio || 1;
    if (g.pw <= 0 || g.ph <= 0) return;
    plot.width = Math.round(g.w * ratio);
    plot.height = Math.round(g.h * ratio);
    var c = pctx;
    c.setTransform(ratio, 0, 0, ratio, 0, 0);
    c.clearRect(0, 0, g.w, g.h);
    var slot = g.pw / D.n, top = MARGIN.t, bottom = MARGIN.t + g.ph;
    var yP = function (p) { return bottom - p * g.ph; };
    // positive runs: shaded; the runs long enough for the verdict darker
    D.runs.forEach(function (r) {
      var decisive = r[1] - r[0] + 1 >= D.need;
      c.fillStyle = decisive ? "rgba(211, 47, 47, 0.22)" : "rgba(255, 160, 0, 0.22)";
      c.fillRect(MARGIN.l + r[0] * slot, top, (r[1] - r[0] + 1) * slot, g.ph);
    });
    // infected area per slice: bars on the right axis
    var area = D.inf_mm2 || D.inf_px;
    var maxArea = Math.max.apply(null, area.map(function (v) { return v || 0; }).concat([1e-9]));
    c.fillStyle = "rgba(183, 28, 28, 0.55)";
    area.forEach(function (v, k) {
      var hgt = ((v || 0) / maxArea) * g.ph;
      if (hgt > 0) c.fillRect(MARGIN.l + k * slot + slot * 0.15, bottom - hgt, Math.max(slot * 0.7, 1), hgt);
    });
    // threshold
    c.strokeStyle = "#555";
    c.setLineDash([5, 4]);
    c.beginPath();
    c.moveTo(MARGIN.l, yP(D.threshold));
    c.lineTo(MARGIN.l + g.pw, yP(D.threshold));
    c.stroke();
    c.setLineDash([]);
    // P(infected) per slice
    c.strokeStyle = "#1565c0";
    c.lineWidth = 1.5;
    c.beginPath();
    D.p.forEach(function (p, k) {
      var x = xOf(g, k), y = yP(p === null ? 0 : p);
      if (k === 0) c.moveTo(x, y); else c.lineTo(x, y);
    });
    c.stroke();
    c.fillStyle = "#1565c0";
    if (slot >= 4) {
      D.p.forEach(function (p, k) { c.fillRect(xOf(g, k) - 1.5, yP(p || 0) - 1.5, 3, 3); });
    }
    // Grad-CAM slices: triangles along the top
    c.fillStyle = "#6a1b9a";
    camSlices.forEach(function (k) {
      var x = xOf(g, k);
      c.beginPath();
      c.moveTo(x - 4, top);
      c.lineTo(x + 4, top);
      c.lineTo(x, top + 6);
      c.fill();
    });
    // current slice
    c.strokeStyle = "#000";
    c.lineWidth = 1;
    c.beginPath();
    c.moveTo(xOf(g, state.k), top);
    c.lineTo(xOf(g, state.k), bottom);
    c.stroke();
    // axes
    c.strokeStyle = "#888";
    c.strokeRect(MARGIN.l, top, g.pw, g.ph);
    c.fillStyle = "#222";
    c.font = "11px sans-serif";
    c.textAlign = "right";
    c.textBaseline = "middle";
    [0, 0.5, 1].forEach(function (p) { c.fillText(p.toFixed(1), MARGIN.l - 4, yP(p)); });
    c.textAlign = "left";
    c.fillText(fmtArea(maxArea), MARGIN.l + g.pw + 4, top + 4);
    c.fillText("0", MARGIN.l + g.pw + 4, bottom);
    c.textAlign = "center";
    c.textBaseline = "top";
    var step = Math.max(1, Math.ceil(D.n / Math.max(1, Math.floor(g.pw / 48))));
    for (var k = 0; k < D.n; k += step) c.fillText(String(k), xOf(g, k), bottom + 3);
    c.fillText("z index (inferior \u2192 superior)", MARGIN.l + g.pw / 2, bottom + 16);
    c.save();
    c.translate(11, top + g.ph / 2);
    c.rotate(-Math.PI / 2);
    c.fillText("P(infected)", 0, -6);
    c.restore();
    c.save();
    c.translate(g.w - 8, top + g.ph / 2);
    c.rotate(Math.PI / 2);
    c.fillText(D.inf_mm2 ? "infected mm\u00b2" : "infected px", 0, -6);
    c.restore();
  }

  function fmtArea(v) { return v >= 1000 ? Math.round(v).toString() : v.toFixed(v >= 10 ? 0 : 1); }

  function plotSlice(event) {
    var rect = plot.getBoundingClientRect(), g = plotGeometry();
    var x = event.clientX - rect.left - MARGIN.l;
    return Math.floor((x / g.pw) * D.n);
  }

  // ---------------------------------------------------------------- controls

  var wheelSum = 0;
  view.addEventListener("wheel", function (e) {
    e.preventDefault();
    var dy = e.deltaY * (e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 800 : 1);
    wheelSum += dy;
    if (Math.abs(wheelSum) >= 40) {  // one slice per notch; a touchpad every 40 px
      goTo(state.k + (wheelSum > 0 ? -1 : 1));
      wheelSum = 0;
    }
  }, { passive: false });

  document.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("input[type=range], select, textarea, input[type=text]")) return;
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    var steps = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 };
    if (e.key in steps) goTo(state.k + steps[e.key]);
    else if (e.key === "Home") goTo(0);
    else if (e.key === "End") goTo(D.n - 1);
    else if (e.key === "o") toggle(boxes.inf);
    else if (e.key === "l") toggle(boxes.outline);
    else if (e.key === "g" && !boxes.cam.disabled) toggle(boxes.cam);
    else if (e.key === "w" && D.windows.length > 1) {
      windowSel.selectedIndex = (windowSel.selectedIndex + 1) % D.windows.length;
      setWindow();
    } else return;
    e.preventDefault();
  });

  function toggle(box) { box.checked = !box.checked; render(); }

  function setWindow() { state.win = windowSel.value; render(); }

  slider.addEventListener("input", function () { goTo(slider.value); });
  windowSel.addEventListener("change", setWindow);
  [boxes.inf, boxes.outline, boxes.cam, opacity].forEach(function (el) {
    el.addEventListener("input", render);
  });
  plot.addEventListener("click", function (e) { goTo(plotSlice(e)); });
  plot.addEventListener("mousemove", function (e) {
    var k = Math.max(0, Math.min(D.n - 1, plotSlice(e)));
    plot.title = "z=" + k + ": P(infected) " + fmt(D.p[k], 3) + ", " + D.inf_px[k] + " px infected";
  });
  document.querySelectorAll("[data-goto]").forEach(function (a) {
    a.addEventListener("click", function (e) {
      e.preventDefault();
      goTo(a.dataset.goto);
      $("viewer").scrollIntoView({ block: "start" });
    });
  });
  rows.forEach(function (row, k) {
    row.addEventListener("click", function () {
      goTo(k);
      $("viewer").scrollIntoView({ block: "start" });
    });
  });
  function fromHash() {
    var m = /z=(\d+)/.exec(window.location.hash);
    if (m) goTo(Number(m[1]));
  }
  window.addEventListener("hashchange", fromHash);
  window.addEventListener("resize", drawPlot);

  // ---------------------------------------------------------------- start
  view.width = D.w;
  view.height = D.h;
  view.style.aspectRatio = String(D.aspect);
  slider.max = String(D.n - 1);
  D.windows.forEach(function (w) {
    var opt = document.createElement("option");
    opt.value = w[0];
    opt.textContent = w[1];
    windowSel.appendChild(opt);
  });
  windowSel.disabled = D.windows.length < 2;
  if (!camSlices.length) {
    boxes.cam.disabled = true;
    $("cam-note").textContent = "(not computed)";
  } else {
    $("cam-note").textContent = "(slices " + camSlices.map(function (k) { return "z=" + k; }).join(", ") + ")";
  }
  goTo(D.initial);
  fromHash();
})();
