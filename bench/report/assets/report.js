// Sortable and filterable tables. A cell's data-v holds its exact number, so numbers sort as numbers and blanks
// sort last whichever way; cells without data-v sort as text.
(function () {
  "use strict";

  function sortKey(cell) {
    if (!cell) return null;
    if (cell.hasAttribute("data-v")) {
      var v = parseFloat(cell.getAttribute("data-v"));
      return isNaN(v) ? null : v;
    }
    var text = cell.textContent.trim().toLowerCase();
    return text === "" ? null : text;
  }

  function compare(a, b) {
    if (a === null || b === null) return a === b ? 0 : (a === null ? 1 : -1);
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }

  function sortBy(table, index, header) {
    var ascending = header.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th").forEach(function (th) { th.removeAttribute("aria-sort"); });
    header.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (x, y) {
      var a = sortKey(x.cells[index]), b = sortKey(y.cells[index]);
      if (a === null || b === null) return compare(a, b);  // blanks last in both directions
      return ascending ? compare(a, b) : compare(b, a);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  function filterRows(table, query, counter) {
    var words = query.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0, rows = table.tBodies[0].rows;
    for (var i = 0; i < rows.length; i++) {
      var text = rows[i].textContent.toLowerCase();
      var keep = words.every(function (w) { return text.indexOf(w) !== -1; });
      rows[i].hidden = !keep;
      if (keep) shown++;
    }
    counter.textContent = shown + " of " + rows.length + " rows";
  }

  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th").forEach(function (th, index) {
      th.addEventListener("click", function () { sortBy(table, index, th); });
    });
  });
  document.querySelectorAll(".filter input").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    var counter = input.parentNode.querySelector("span");
    input.addEventListener("input", function () { filterRows(table, input.value, counter); });
    filterRows(table, "", counter);
  });
})();
