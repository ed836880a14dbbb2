// ffiprof report behaviour: sortable tables, the flamegraph search box (driving inferno's own
// search/zoom functions, which inferno's inline SVG script defines globally), and a "ready" marker
// that tests wait for. Everything here is local to this closure, so it can't clash with inferno's
// globals (init, search, zoom, unzoom, frames, ...).
(function () {
  "use strict";

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return numeric ? -Infinity : "";
    var v = cell.getAttribute("data-v");
    if (numeric) {
      var n = parseFloat(v !== null ? v : cell.textContent);
      return isNaN(n) ? -Infinity : n;
    }
    return (v !== null ? v : cell.textContent).toLowerCase();
  }

  function sortTable(table, th) {
    var index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-type") === "num";
    // Numbers start high-to-low, names A-to-Z: the first click gives the useful order.
    var current = th.getAttribute("aria-sort");
    var dir = current ? (current === "descending" ? "ascending" : "descending") : (numeric ? "descending" : "ascending");
    var heads = th.parentNode.children;
    for (var i = 0; i < heads.length; i++) heads[i].removeAttribute("aria-sort");
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var keyed = rows.map(function (r, i) { return { r: r, k: cellValue(r, index, numeric), i: i }; });
    keyed.sort(function (a, b) {
      var c = a.k < b.k ? -1 : a.k > b.k ? 1 : 0;
      if (dir === "descending") c = -c;
      return c || a.i - b.i;
    });
    var frag = document.createDocumentFragment();
    keyed.forEach(function (x) { frag.appendChild(x.r); });
    body.appendChild(frag);
  }

  function setupSorting() {
    var tables = document.querySelectorAll("table.sortable");
    for (var t = 0; t < tables.length; t++) {
      (function (table) {
        var heads = table.tHead ? table.tHead.rows[0].cells : [];
        for (var h = 0; h < heads.length; h++) {
          heads[h].setAttribute("tabindex", "0");
          heads[h].addEventListener("click", function (e) { sortTable(table, e.currentTarget); });
          heads[h].addEventListener("keydown", function (e) {
            if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortTable(table, e.currentTarget); }
          });
        }
      })(tables[t]);
    }
  }

  function flamegraphReady() {
    // inferno's init() runs from the SVG's onload; where a browser doesn't fire it for inline SVG,
    // run it ourselves (it sets known_font_width, so it is easy to tell whether it ran).
    if (typeof window.init === "function" && document.getElementById("frames") && typeof window.known_font_width === "undefined") {
      window.init(null);
    }
  }

  function setupSearch() {
    var box = document.getElementById("fg-search");
    if (!box) return;
    var status = document.getElementById("fg-status");
    function run() {
      var term = box.value;
      if (typeof window.search !== "function") return;
      // inferno's search_prompt() with a search active is its "Reset Search" button.
      if (window.searching && typeof window.search_prompt === "function") window.search_prompt();
      if (!term) { status.textContent = ""; return; }
      try { new RegExp(term); } catch (err) { status.textContent = "not a valid regular expression"; return; }
      window.search(term);
      var matched = document.getElementById("matched");
      status.textContent = window.searching ? (matched ? matched.textContent : "") : "no frame matches";
    }
    box.addEventListener("keydown", function (e) { if (e.key === "Enter") { e.preventDefault(); run(); } });
    var go = document.getElementById("fg-go");
    if (go) go.addEventListener("click", run);
    var reset = document.getElementById("fg-reset");
    if (reset) reset.addEventListener("click", function () {
      box.value = "";
      run();
      if (typeof window.unzoom === "function") window.unzoom();
    });
  }

  // Following a link to a site or function row briefly highlights it even when already :target.
  function setupFlash() {
    document.addEventListener("click", function (e) {
      var a = e.target.closest ? e.target.closest("a[href^='#']") : null;
      if (!a) return;
      var row = document.getElementById(a.getAttribute("href").slice(1));
      if (row && row.tagName === "TR") {
        row.classList.add("flash");
        setTimeout(function () { row.classList.remove("flash"); }, 1600);
      }
    });
  }

  function markReady() {
    var root = document.documentElement;
    root.setAttribute("data-ffiprof-frames", String(document.querySelectorAll("#frames > g").length));
    root.setAttribute("data-ffiprof-rows", String(document.querySelectorAll("table.sortable tbody tr").length));
    root.setAttribute("data-ffiprof-ready", "1");
  }

  setupSorting();
  setupSearch();
  setupFlash();
  window.addEventListener("load", function () {
    flamegraphReady();
    // inferno's fluid layout finishes in a setTimeout(0) of its own; mark ready after it.
    setTimeout(markReady, 0);
  });
})();
