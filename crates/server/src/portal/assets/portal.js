// trustlaunch portal: the little the pages do in the browser (no inline
// script: the Content Security Policy forbids it). Everything works
// without this file; it only adds conveniences.
(function () {
  "use strict";
  // "Select all" on a table of instances.
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t && t.matches && t.matches("input[data-select-all]")) {
      var boxes = document.querySelectorAll("input[name='" + t.getAttribute("data-select-all") + "']");
      for (var i = 0; i < boxes.length; i++) { boxes[i].checked = t.checked; }
    }
  });
})();
