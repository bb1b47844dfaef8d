// The pieces every HTML page of pd is made of (report.html of a run, the comparison page of
// `pd report --compare` and `pd sweep`): escaping, inline images, one page skeleton with its
// CSS and script, sortable tables and inline SVG line charts. Pages are self-contained: no
// network, no external file; images are data: URIs, charts are SVG.
#pragma once
#include <string>
#include <vector>

namespace pd::html {

// s with & < > " ' replaced by entities: safe as element text and inside a quoted attribute.
std::string escape(const std::string& s);

// RFC 4648 base64 (with padding).
std::string base64(const std::string& bytes);

// <img> of the PNG at `path` as a data: URI, class `cls`; empty when the file does not exist.
std::string png_img(const std::string& path, const std::string& alt, const std::string& cls);

// A whole page: <head> with `title`, the shared CSS and script, then `body`.
std::string page(const std::string& title, const std::string& body);

// One table cell: what is shown (already HTML) and the value it sorts by (number or text).
struct Cell {
  std::string html;
  std::string sort;  // empty: sorts by the text of `html`
  bool numeric = false;
  std::string cls;   // CSS class, e.g. "diff" for a highlighted cell
};
Cell text(const std::string& s, const std::string& cls = "");
// A number shown with `digits` significant digits (fixed when digits < 0: -digits decimals);
// NaN shows as "-" and sorts last.
Cell num(double v, int digits = 4);

// A sortable table (click a header). cap > 0: only the first cap rows show until the "show all"
// button under it is pressed (a table of 500 components stays readable).
std::string table(const std::string& id, const std::vector<std::string>& headers,
                  const std::vector<std::vector<Cell>>& rows, size_t cap = 0);

// One line of a chart.
struct Series {
  std::string name;
  std::vector<double> x, y;
};
// Inline SVG line chart of the series (at most ~800 points drawn per series), x linear, y log10
// when log_y (non-positive values are skipped), with a legend. Empty series give a note.
std::string line_chart(const std::vector<Series>& series, const std::string& title, const std::string& x_label,
                       bool log_y);

// A CSV file with a header line and numeric cells (empty or unparsable: NaN), by column.
struct Csv {
  std::vector<std::string> names;
  std::vector<std::vector<double>> cols;
  const std::vector<double>* col(const std::string& name) const;
};
// Throws ad::Error naming the file when it cannot be read or has no header.
Csv read_csv(const std::string& path);

}  // namespace pd::html
