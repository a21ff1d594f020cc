// MathJax 3 reads this object when it loads. pymdownx.arithmatex wraps every formula in an
// element of class "arithmatex" with \( \) or \[ \] delimiters; typeset those elements only,
// so that code blocks and API signatures are never mistaken for TeX.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
  },
  options: {
    // Skip everything (".*") except what processHtmlClass names.
    ignoreHtmlClass: ".*",
    processHtmlClass: "arithmatex",
  },
};
