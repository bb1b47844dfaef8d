#include "experiments/bounds/report.hpp"

#include <cmath>
#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

#include "autodiff/error.hpp"
#include "autodiff/fileio.hpp"
#include "experiments/plot.hpp"

namespace pd::bounds {

const char* kind_name(CheckKind k) {
  switch (k) {
    case CheckKind::Ratio: return "ratio";
    case CheckKind::Bound: return "bound";
    case CheckKind::Slope: return "slope";
    case CheckKind::Below: return "below";
    case CheckKind::Above: return "above";
  }
  return "?";
}

double CheckRow::compare() const {
  if (kind == CheckKind::Slope || kind == CheckKind::Below || kind == CheckKind::Above) return measured - predicted;
  return predicted != 0.0 ? measured / predicted : std::nan("");
}

bool CheckRow::held() const {
  if (!std::isfinite(measured) || !std::isfinite(predicted)) return false;
  switch (kind) {
    case CheckKind::Ratio: {
      if (predicted <= 0.0) return false;
      const double r = measured / predicted;
      return r >= 1.0 / tol && r <= tol;
    }
    case CheckKind::Bound: return measured <= tol * predicted;
    case CheckKind::Slope: return std::fabs(measured - predicted) <= tol;
    case CheckKind::Below: return measured <= predicted;
    case CheckKind::Above: return measured >= predicted;
  }
  return false;
}

LogLogFit fit_loglog(const std::vector<double>& x, const std::vector<double>& y, const std::string& what) {
  if (x.size() != y.size() || x.size() < 2)
    ad::fail("fit_loglog(" + what + "): need >= 2 paired points, got " +
             std::to_string(x.size()) + " x and " + std::to_string(y.size()) + " y");
  const double n = static_cast<double>(x.size());
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  std::vector<double> lx(x.size()), ly(y.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (!(x[i] > 0) || !(y[i] > 0))
      ad::fail("fit_loglog(" + what + "): non-positive value at point " + std::to_string(i));
    lx[i] = std::log(x[i]);
    ly[i] = std::log(y[i]);
    sx += lx[i], sy += ly[i], sxx += lx[i] * lx[i], sxy += lx[i] * ly[i];
  }
  const double denom = n * sxx - sx * sx;
  if (std::fabs(denom) < 1e-300) ad::fail("fit_loglog(" + what + "): all x equal");
  LogLogFit f;
  f.slope = (n * sxy - sx * sy) / denom;
  f.intercept = (sy - f.slope * sx) / n;
  double ss_res = 0, ss_tot = 0;
  const double mean_y = sy / n;
  for (size_t i = 0; i < x.size(); ++i) {
    const double r = ly[i] - (f.intercept + f.slope * lx[i]);
    ss_res += r * r;
    ss_tot += (ly[i] - mean_y) * (ly[i] - mean_y);
  }
  f.r2 = ss_tot > 0 ? 1.0 - ss_res / ss_tot : 1.0;
  return f;
}

void write_table_json(const std::string& path, const std::vector<CheckRow>& rows) {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json j;
    j["check"] = r.check;
    j["quantity"] = r.quantity;
    j["params"] = r.params;
    j["kind"] = kind_name(r.kind);
    j["measured"] = r.measured;
    j["predicted"] = r.predicted;
    if (r.kind == CheckKind::Slope)
      j["slope_minus_predicted"] = r.compare();
    else if (r.kind == CheckKind::Below || r.kind == CheckKind::Above)
      j["measured_minus_threshold"] = r.compare();
    else
      j["ratio"] = r.compare();
    j["tolerance"] = r.tol;
    j["held"] = r.held();
    j["verdict"] = r.held() ? "held" : "broken";
    j["note"] = r.note;
    arr.push_back(j);
  }
  ad::write_file_atomic(path, arr.dump(2) + "\n");
}

static std::string csv_escape(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += (c == '"') ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

void write_table_csv(const std::string& path, const std::vector<CheckRow>& rows) {
  std::ostringstream os;
  os.precision(6);
  os << "check,quantity,params,kind,measured,predicted,ratio_or_slope_diff,tolerance,verdict,note\n";
  for (const auto& r : rows)
    os << csv_escape(r.check) << ',' << csv_escape(r.quantity) << ',' << csv_escape(r.params) << ','
       << kind_name(r.kind) << ',' << r.measured << ',' << r.predicted << ',' << r.compare() << ',' << r.tol
       << ',' << (r.held() ? "held" : "broken") << ',' << csv_escape(r.note) << '\n';
  ad::write_file_atomic(path, os.str());
}

std::string format_table(const std::vector<CheckRow>& rows) {
  std::ostringstream os;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%-12s %-34s %-36s %-5s %11s %11s %9s %6s  %s\n", "check", "quantity", "params",
                "kind", "measured", "predicted", "ratio/dif", "tol", "verdict");
  os << buf;
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "%-12s %-34s %-36s %-5s %11.4g %11.4g %9.3g %6.3g  %s\n", r.check.c_str(),
                  r.quantity.c_str(), r.params.c_str(), kind_name(r.kind), r.measured, r.predicted, r.compare(),
                  r.tol, r.held() ? "held" : "BROKEN");
    os << buf;
  }
  return os.str();
}

std::string format_table_markdown(const std::vector<CheckRow>& rows) {
  std::ostringstream os;
  char buf[640];
  os << "| check | quantity | params | kind | measured | predicted | ratio / diff | tol | verdict | note |\n"
     << "|---|---|---|---|---:|---:|---:|---:|---|---|\n";
  // A '|' inside a cell (||W||_F^2) would end the cell: escaped as \|.
  auto cell = [](const std::string& text) {
    std::string out;
    for (char c : text) out += c == '|' ? std::string("\\|") : std::string(1, c);
    return out;
  };
  for (const auto& r : rows) {
    std::snprintf(buf, sizeof buf, "| %s | %s | %s | %s | %.4g | %.4g | %.3g | %.3g | %s | ", cell(r.check).c_str(),
                  cell(r.quantity).c_str(), cell(r.params).c_str(), kind_name(r.kind), r.measured, r.predicted,
                  r.compare(), r.tol, r.held() ? "held" : "**broken**");
    os << buf << cell(r.note) << " |\n";
  }
  return os.str();
}

PlotSeries fit_line(const std::string& title, const LogLogFit& fit, double x_min, double x_max) {
  PlotSeries s;
  s.title = title;
  s.line = true;
  const int n = 20;
  for (int i = 0; i < n; ++i) {
    const double lx = std::log(x_min) + (std::log(x_max) - std::log(x_min)) * i / (n - 1);
    s.x.push_back(std::exp(lx));
    s.y.push_back(std::exp(fit.intercept + fit.slope * lx));
  }
  return s;
}

bool plot_xy(const std::string& dir, const std::string& name, const std::string& title, const std::string& xlabel,
             const std::string& ylabel, const std::vector<PlotSeries>& series, bool logx, bool logy) {
  const std::string dat = dir + "/" + name + ".dat", gp = dir + "/" + name + ".gp", png = dir + "/" + name + ".png";
  std::ostringstream d;
  d.precision(10);
  for (size_t s = 0; s < series.size(); ++s) {
    d << "# " << series[s].title << "\n";
    for (size_t i = 0; i < series[s].x.size(); ++i) d << series[s].x[i] << ' ' << series[s].y[i] << '\n';
    d << "\n\n";  // gnuplot index separator
  }
  ad::write_file_atomic(dat, d.str());
  std::ostringstream g;
  g << "set title " << gnuplot_quote(title) << " noenhanced\n"
    << "set xlabel " << gnuplot_quote(xlabel) << " noenhanced\nset ylabel " << gnuplot_quote(ylabel) << " noenhanced\n"
    << "set key left top noenhanced\nset grid\n";
  if (logx) g << "set logscale x\n";
  if (logy) g << "set logscale y\n";
  g << "plot ";
  for (size_t s = 0; s < series.size(); ++s) {
    if (s) g << ", \\\n     ";
    g << gnuplot_quote(dat) << " index " << s << " using 1:2 with "
      << (series[s].line ? "lines lw 2" : series[s].scatter ? "points pt 7 ps 1.0" : "linespoints pt 7 ps 1.2") << " title " << gnuplot_quote(series[s].title);
  }
  g << "\n";
  return plot_png(gp, png, "pngcairo size 900,600 enhanced font 'Sans,11'", g.str());
}

}  // namespace pd::bounds
