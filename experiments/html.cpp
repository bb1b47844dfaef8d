#include "experiments/html.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"

namespace pd::html {

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::string base64(const std::string& in) {
  static const char* tab = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8 | (unsigned char)in[i + 2];
    o += tab[v >> 18], o += tab[(v >> 12) & 63], o += tab[(v >> 6) & 63], o += tab[v & 63];
  }
  if (i + 1 == in.size()) {
    const unsigned v = (unsigned char)in[i] << 16;
    o += tab[v >> 18], o += tab[(v >> 12) & 63], o += "==";
  } else if (i + 2 == in.size()) {
    const unsigned v = (unsigned char)in[i] << 16 | (unsigned char)in[i + 1] << 8;
    o += tab[v >> 18], o += tab[(v >> 12) & 63], o += tab[(v >> 6) & 63], o += '=';
  }
  return o;
}

std::string png_img(const std::string& path, const std::string& alt, const std::string& cls) {
  if (!std::filesystem::exists(path)) return "";
  return "<img class=\"" + escape(cls) + "\" alt=\"" + escape(alt) + "\" src=\"data:image/png;base64," +
         base64(ad::read_file(path)) + "\">";
}

static const char* kCss = R"(body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ddd;padding:2px 8px;text-align:right}th{background:#f3f3f3;cursor:pointer;user-select:none}
td:first-child,th:first-child{text-align:left}tr:nth-child(even) td{background:#fafafa}
td.diff{background:#fff3c4!important}tr.capped{display:none}.note{color:#666;font-size:.9em}
img{max-width:100%;border:1px solid #eee}img.tms{max-width:640px}pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em}
svg text{font:11px sans-serif}button{margin:.2em 0}
td.ctx{text-align:left}code.ctx{white-space:pre;background:#f6f6f6;padding:0 .3em;line-height:1.7}
code.ctx mark{background:#ffd54f}code.ctx .ws{color:#999}
)";

// Sorting by clicking a header (numbers numerically, NaN last), and the row cap of long tables.
static const char* kScript = R"(function pdCap(t){var all=t.dataset.all==='1',cap=+t.dataset.cap||0,rows=t.tBodies[0].rows;
for(var i=0;i<rows.length;i++)rows[i].className=(!all&&cap>0&&i>=cap)?'capped':'';}
function pdSort(th){var t=th.closest('table'),k=th.cellIndex,num=th.dataset.num==='1',up=th.dataset.dir!=='asc';
th.dataset.dir=up?'asc':'desc';var b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows);
function v(r){var c=r.cells[k],s=c.dataset.v!==undefined?c.dataset.v:c.textContent;
if(!num)return s;var x=parseFloat(s);return isNaN(x)?null:x;}
rows.sort(function(a,c){var x=v(a),y=v(c);if(x===null)return y===null?0:1;if(y===null)return -1;
return (x<y?-1:x>y?1:0)*(up?1:-1);});rows.forEach(function(r){b.appendChild(r);});pdCap(t);}
function pdAll(btn){var t=document.getElementById(btn.dataset.table);t.dataset.all=t.dataset.all==='1'?'0':'1';
btn.textContent=t.dataset.all==='1'?'show the first '+t.dataset.cap:'show all '+t.tBodies[0].rows.length;pdCap(t);}
document.addEventListener('DOMContentLoaded',function(){document.querySelectorAll('table.sortable').forEach(pdCap);});
)";

std::string page(const std::string& title, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + escape(title) +
         "</title>\n<style>" + kCss + "</style>\n<script>" + kScript + "</script></head>\n<body>\n" + body +
         "\n</body></html>\n";
}

Cell text(const std::string& s, const std::string& cls) { return Cell{escape(s), s, false, cls}; }

Cell num(double v, int digits) {
  if (!std::isfinite(v)) return Cell{"-", "", true, ""};
  char buf[48];
  if (digits < 0) std::snprintf(buf, sizeof buf, "%.*f", -digits, v);
  else std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  char key[48];
  std::snprintf(key, sizeof key, "%.17g", v);
  return Cell{buf, key, true, ""};
}

std::string table(const std::string& id, const std::vector<std::string>& headers,
                  const std::vector<std::vector<Cell>>& rows, size_t cap) {
  std::ostringstream o;
  o << "<table class=\"sortable\" id=\"" << escape(id) << "\" data-cap=\"" << cap << "\"><thead><tr>";
  for (size_t k = 0; k < headers.size(); ++k) {
    bool numeric = !rows.empty();
    for (const auto& r : rows) numeric = numeric && (k >= r.size() || r[k].numeric);
    o << "<th data-num=\"" << (numeric ? 1 : 0) << "\" onclick=\"pdSort(this)\">" << escape(headers[k]) << "</th>";
  }
  o << "</tr></thead><tbody>\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    o << "<tr" << (cap > 0 && i >= cap ? " class=\"capped\"" : "") << ">";
    for (const Cell& c : rows[i])
      o << "<td" << (c.cls.empty() ? "" : " class=\"" + escape(c.cls) + "\"")
        << (c.sort.empty() ? "" : " data-v=\"" + escape(c.sort) + "\"") << ">" << c.html << "</td>";
    o << "</tr>\n";
  }
  o << "</tbody></table>\n";
  if (cap > 0 && rows.size() > cap)
    o << "<button data-table=\"" << escape(id) << "\" onclick=\"pdAll(this)\">show all " << rows.size()
      << "</button> <span class=\"note\">(" << cap << " of " << rows.size() << " rows shown)</span>\n";
  return o.str();
}

namespace {

const char* kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                         "#bcbd22", "#17becf"};

std::string fmt(const char* f, double v) {
  char buf[48];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

std::string line_chart(const std::vector<Series>& series, const std::string& title, const std::string& x_label,
                       bool log_y) {
  const double W = 860, H = 360, L = 70, R = 20, T = 30, B = 40;
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  auto ty = [&](double y) { return log_y ? std::log10(y) : y; };
  for (const Series& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i]) || (log_y && s.y[i] <= 0)) continue;
      x0 = std::min(x0, s.x[i]), x1 = std::max(x1, s.x[i]), y0 = std::min(y0, ty(s.y[i])), y1 = std::max(y1, ty(s.y[i]));
    }
  if (!(x0 <= x1)) return "<p class=\"note\">" + escape(title) + ": no data to draw</p>\n";
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return T + (y1 - ty(y)) / (y1 - y0) * (H - T - B); };
  size_t longest = 1;
  for (const Series& s : series) longest = std::max(longest, s.name.size());
  const size_t per_row = std::max<size_t>(1, std::min<size_t>(4, 110 / longest));  // legend entries per line
  std::ostringstream o;
  o << "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\""
    << H + 18 * ((series.size() + per_row - 1) / per_row) + 4 << "\"><text x=\"" << L << "\" y=\"18\">" << escape(title) << "</text>"
    << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << W - L - R << "\" height=\"" << H - T - B
    << "\" fill=\"none\" stroke=\"#999\"/>";
  for (int k = 0; k <= 4; ++k) {  // y ticks
    const double yv = y0 + (y1 - y0) * k / 4, yp = T + (H - T - B) * (1 - k / 4.0);
    o << "<text x=\"" << L - 4 << "\" y=\"" << yp + 4 << "\" text-anchor=\"end\">"
      << fmt(log_y ? "%.1e" : "%.3g", log_y ? std::pow(10, yv) : yv) << "</text>";
    const double xv = x0 + (x1 - x0) * k / 4;
    o << "<text x=\"" << px(xv) << "\" y=\"" << H - B + 14 << "\" text-anchor=\"middle\">" << fmt("%.6g", xv) << "</text>";
  }
  o << "<text x=\"" << (L + W - R) / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">" << escape(x_label) << "</text>";
  for (size_t k = 0; k < series.size(); ++k) {
    const Series& s = series[k];
    const size_t n = std::min(s.x.size(), s.y.size()), stride = std::max<size_t>(1, n / 800);
    o << "<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"" << kColors[k % 10] << "\" points=\"";
    auto point = [&](size_t i) {
      if (std::isfinite(s.x[i]) && std::isfinite(s.y[i]) && !(log_y && s.y[i] <= 0))
        o << fmt("%.1f", px(s.x[i])) << "," << fmt("%.1f", py(s.y[i])) << " ";
    };
    for (size_t i = 0; i < n; i += stride) point(i);
    if (n > 0 && (n - 1) % stride != 0) point(n - 1);
    o << "\"><title>" << escape(s.name) << "</title></polyline>";
    const double lx = L + (double)(k % per_row) * (W - L) / (double)per_row, ly = H + 14 + 18 * (double)(k / per_row);
    o << "<rect x=\"" << lx << "\" y=\"" << ly - 9 << "\" width=\"12\" height=\"4\" fill=\"" << kColors[k % 10]
      << "\"/><text x=\"" << lx + 16 << "\" y=\"" << ly << "\">" << escape(s.name) << "</text>";
  }
  o << "</svg>\n";
  return o.str();
}

const std::vector<double>* Csv::col(const std::string& name) const {
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] == name) return &cols[k];
  return nullptr;
}

Csv read_csv(const std::string& path) {
  std::istringstream in(ad::read_file(path));
  std::string line;
  Csv c;
  if (!std::getline(in, line) || line.empty()) ad::fail(path + ": no CSV header line");
  std::stringstream h(line);
  for (std::string f; std::getline(h, f, ',');) c.names.push_back(f);
  c.cols.resize(c.names.size());
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::stringstream r(line);
    std::string f;
    for (size_t k = 0; k < c.names.size(); ++k) {
      if (!std::getline(r, f, ',')) f.clear();
      char* end = nullptr;
      const double v = std::strtod(f.c_str(), &end);
      c.cols[k].push_back(end != f.c_str() ? v : NAN);
    }
  }
  return c;
}

}  // namespace pd::html
