// abreast report: zoom and pan on the time axis, the tooltip, the output of an attempt.
// Everything the page draws is already in it (inline SVG); this only moves the view.
// Each timeline's SVG has x in seconds and y in rows, so zooming is one viewBox change.
(() => {
  "use strict";
  const span = parseFloat(document.body.dataset.span) || 1;
  const plots = Array.from(document.querySelectorAll("svg.plot"));
  const attempts = document.querySelectorAll("rect.a"); // data-ref="N" is attempts[N]
  const tip = document.getElementById("tip");
  const detail = document.getElementById("detail");
  const outputsNode = document.getElementById("outputs");
  const outputs = outputsNode ? JSON.parse(outputsNode.textContent) : null;
  const causesNode = document.getElementById("causes");
  const causes = causesNode ? JSON.parse(causesNode.textContent) : [];
  const zoomBar = document.querySelector("#controls .zoom");
  const rangeLabel = zoomBar ? zoomBar.querySelector(".range") : null;
  const minWidth = Math.max(span * 1e-7, 1e-6);
  let t0 = 0;
  let t1 = span;
  let queued = false;

  // The same as the terminal's: 90 -> 1m30s, 3.25 -> 3.25s, 661.29 -> 11m1.3s.
  function fmt(t) {
    if (t < 0) return "-" + fmt(-t);
    if (t < 60) return +t.toFixed(3) + "s";
    t = Math.round(t * 10) / 10;
    const whole = Math.floor(t);
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = Math.round((whole % 60 + (t - whole)) * 10) / 10;
    return (h ? h + "h" : "") + (m ? m + "m" : "") + (s ? s + "s" : "");
  }

  const STEPS = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

  function ticks(a, b, count) {
    const raw = (b - a) / Math.max(1, count);
    let step = STEPS.find((c) => c >= raw);
    if (step === undefined) step = 86400 * Math.ceil(raw / 86400);
    const out = [];
    for (let i = Math.ceil(a / step); i * step <= b + step * 1e-9; i++) out.push(i * step);
    return out;
  }

  function pct(t) {
    return ((t - t0) / (t1 - t0)) * 100 + "%";
  }

  // Each timeline is cut into chunks of rows (one <svg class="plot"> each): a zoom
  // redraws the chunks in view at once and the others when they scroll into view, so
  // its cost does not grow with the number of attempts.
  let version = 0;
  const inView = new Set();
  function fitChunk(p) {
    if (p._version === version) return;
    p._version = version;
    p.setAttribute("viewBox", `${t0} 0 ${t1 - t0} ${p.viewBox.baseVal.height}`);
  }
  const observer = "IntersectionObserver" in window ? new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) {
        inView.add(e.target);
        fitChunk(e.target);
      } else {
        inView.delete(e.target);
      }
    }
  }, { rootMargin: "300px 0px" }) : null;
  for (const p of plots) {
    p._version = 0;
    if (observer) observer.observe(p);
  }

  function draw() {
    queued = false;
    version++;
    for (const p of observer ? inView : plots) fitChunk(p);
    const axis = document.querySelector(".axis .ticks");
    const count = axis ? Math.max(2, Math.floor(axis.getBoundingClientRect().width / 90)) : 8;
    const values = ticks(Math.max(0, t0), t1, count);
    for (const box of document.querySelectorAll(".axis .ticks")) {
      box.replaceChildren(...values.map((t) => {
        const s = document.createElement("span");
        s.style.left = pct(t);
        s.textContent = fmt(t);
        return s;
      }));
    }
    for (const grid of document.querySelectorAll(".grid")) {
      for (const line of grid.querySelectorAll("i")) line.remove();
      for (const t of values) {
        const line = document.createElement("i");
        line.style.left = pct(t);
        grid.prepend(line);
      }
      for (const mark of grid.querySelectorAll(".mark")) mark.style.left = pct(parseFloat(mark.dataset.t));
    }
    if (rangeLabel) rangeLabel.textContent = `showing ${fmt(Math.max(0, t0))} – ${fmt(t1)}`;
  }

  function redraw() {
    if (!queued) {
      queued = true;
      requestAnimationFrame(draw);
    }
  }

  function setView(a, b) {
    const pad = span * 0.05;
    if (b - a < minWidth) {
      const mid = (a + b) / 2;
      a = mid - minWidth / 2;
      b = mid + minWidth / 2;
    }
    if (b - a >= span + 2 * pad) {
      a = -pad;
      b = span + pad;
    }
    if (a < -pad) {
      b += -pad - a;
      a = -pad;
    }
    if (b > span + pad) {
      a -= b - span - pad;
      b = span + pad;
    }
    t0 = a;
    t1 = b;
    redraw();
  }

  function fit() {
    t0 = 0;
    t1 = span;
    redraw();
  }

  function zoomAt(t, factor) {
    setView(t - (t - t0) * factor, t + (t1 - t) * factor);
  }

  function pan(dt) {
    setView(t0 + dt, t1 + dt);
  }

  function plotOf(el) {
    const tl = el.closest(".tl");
    return tl ? tl.querySelector("svg.plot") : plots[0];
  }

  function timeAt(plot, clientX) {
    const r = plot.getBoundingClientRect();
    return t0 + ((clientX - r.left) / r.width) * (t1 - t0);
  }

  // --- zoom and pan ---------------------------------------------------------------------
  for (const tl of document.querySelectorAll(".tl")) {
    const plot = tl.querySelector("svg.plot");
    tl.addEventListener("wheel", (e) => {
      const overAxis = e.target.closest(".axis");
      if (e.ctrlKey || e.metaKey || e.altKey || overAxis) {
        e.preventDefault();
        zoomAt(timeAt(plot, e.clientX), Math.exp(Math.max(-300, Math.min(300, e.deltaY)) * 0.002));
      } else if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
        e.preventDefault();
        const d = Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : e.deltaY;
        pan((d / plot.getBoundingClientRect().width) * (t1 - t0));
      }
    }, { passive: false });
    const axis = tl.querySelector(".axis .ticks");
    axis.addEventListener("click", (e) => zoomAt(timeAt(plot, e.clientX), e.shiftKey ? 2 : 0.5));
  }

  let drag = null;
  let dragged = false;
  document.addEventListener("mousedown", (e) => {
    const plot = e.target.closest && e.target.closest("svg.plot");
    if (!plot || e.button !== 0) return;
    drag = { x: e.clientX, t0, t1, width: plot.getBoundingClientRect().width, plot };
    dragged = false;
  });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const dx = e.clientX - drag.x;
    if (!dragged && Math.abs(dx) < 3) return;
    if (!dragged) drag.plot.classList.add("dragging");
    dragged = true;
    hideTip();
    const dt = (-dx / drag.width) * (drag.t1 - drag.t0);
    setView(drag.t0 + dt, drag.t1 + dt);
  });
  window.addEventListener("mouseup", () => {
    if (drag) drag.plot.classList.remove("dragging");
    drag = null;
  });

  if (zoomBar) {
    zoomBar.hidden = false;
    zoomBar.addEventListener("click", (e) => {
      const what = e.target.dataset && e.target.dataset.zoom;
      const mid = (t0 + t1) / 2;
      if (what === "in") zoomAt(mid, 0.5);
      else if (what === "out") zoomAt(mid, 2);
      else if (what === "fit") fit();
    });
  }

  document.addEventListener("keydown", (e) => {
    if (e.target.closest && e.target.closest("input, textarea, select")) return;
    const mid = (t0 + t1) / 2;
    if (e.key === "+" || e.key === "=") zoomAt(mid, 0.5);
    else if (e.key === "-" || e.key === "_") zoomAt(mid, 2);
    else if (e.key === "0") fit();
    else if (e.key === "ArrowLeft") pan(-(t1 - t0) * 0.1);
    else if (e.key === "ArrowRight") pan((t1 - t0) * 0.1);
    else if (e.key === "Escape") detail.hidden = true;
    else return;
    e.preventDefault();
  });

  // --- the tooltip and the detail panel ---------------------------------------------------
  function attemptOf(el) {
    if (!el || !el.classList) return null;
    if (el.classList.contains("a")) return el;
    if (el.dataset.ref !== undefined) return attempts[+el.dataset.ref] || null;
    return null;
  }

  function fields(a) {
    const d = a.dataset;
    const start = parseFloat(d.start);
    const running = d.end === "";
    const end = running ? NaN : parseFloat(d.end);
    const rows = [
      ["step", d.step],
      ["target", d.target === "" ? "(server step)" : d.target],
      ["attempt", d.attempt],
      ["start", fmt(start)],
      ["end", running ? "(not finished)" : fmt(end)],
      ["duration", running ? "(not finished)" : fmt(end - start)],
      ["outcome", d.outcome],
      ["exit code", d.exit === "" ? "none" : d.exit],
    ];
    if (d.error) rows.push(["error", d.error]);
    if (a.classList.contains("cp")) rows.push(["", "on the critical path"]);
    return rows;
  }

  function waitFields(w) {
    const x = parseFloat(w.getAttribute("x"));
    const width = parseFloat(w.getAttribute("width"));
    const kind = Array.from(w.classList).find((c) => c.startsWith("k-"));
    return [
      ["waited", kind ? kind.slice(2).replace("-", " ") : "on the critical path"],
      ["why", causes[+w.dataset.c] || ""],
      ["from", fmt(x)],
      ["until", fmt(x + width)],
      ["duration", fmt(width)],
    ];
  }

  function table(rows) {
    const t = document.createElement("table");
    for (const [k, v] of rows) {
      const tr = t.insertRow();
      const th = document.createElement("th");
      th.textContent = k;
      tr.append(th);
      tr.insertCell().textContent = v;
    }
    return t;
  }

  let lit = [];
  function light(a) {
    for (const el of lit) el.classList.remove("hl");
    lit = [];
    if (!a) return;
    const i = Array.prototype.indexOf.call(attempts, a);
    lit = [a, ...document.querySelectorAll(`[data-ref="${i}"]`)];
    for (const el of lit) el.classList.add("hl");
  }

  function hideTip() {
    tip.hidden = true;
    light(null);
  }

  function place(e) {
    const pad = 14;
    const r = tip.getBoundingClientRect();
    let x = e.clientX + pad;
    let y = e.clientY + pad;
    if (x + r.width > window.innerWidth) x = Math.max(0, e.clientX - r.width - pad);
    if (y + r.height > window.innerHeight) y = Math.max(0, e.clientY - r.height - pad);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }

  let shown = null;
  document.addEventListener("mouseover", (e) => {
    if (drag && dragged) return;
    const a = attemptOf(e.target);
    const w = !a && e.target.dataset && e.target.dataset.c !== undefined ? e.target : null;
    const what = a || w;
    if (!what) {
      if (shown) hideTip();
      shown = null;
      return;
    }
    if (what !== shown) {
      tip.replaceChildren(table(a ? fields(a) : waitFields(w)));
      tip.hidden = false;
      light(a);
      shown = what;
    }
    place(e);
  });
  document.addEventListener("mousemove", (e) => {
    if (shown && !tip.hidden) place(e);
  });

  document.addEventListener("click", (e) => {
    if (dragged) {
      dragged = false;
      return;
    }
    if (e.target.closest && e.target.closest("#detail .close")) {
      detail.hidden = true;
      return;
    }
    const a = attemptOf(e.target);
    if (!a) {
      if (e.target.closest && e.target.closest("svg.plot")) detail.hidden = true; // a click beside the bars
      return;
    }
    const body = detail.querySelector(".body");
    const title = document.createElement("strong");
    const d = a.dataset;
    title.textContent = `${d.step} @ ${d.target || "server"} #${d.attempt}`;
    const parts = [title, table(fields(a))];
    const note = document.createElement("p");
    note.className = "dim";
    if (outputs === null) {
      note.textContent = "A simulation runs nothing, so it has no output.";
      parts.push(note);
    } else {
      const lines = outputs[Array.prototype.indexOf.call(attempts, a)];
      if (lines && lines.length) {
        note.textContent = `The last ${lines.length} line${lines.length === 1 ? "" : "s"} of its output:`;
        const pre = document.createElement("pre");
        pre.className = "output";
        pre.textContent = lines.join("\n");
        parts.push(note, pre);
      } else {
        note.textContent = "No output was recorded for this attempt.";
        parts.push(note);
      }
    }
    body.replaceChildren(...parts);
    detail.hidden = false;
  });

  draw();
})();
