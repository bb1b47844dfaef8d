// The bounds table (one row per prediction), least-squares fits in log-log, and gnuplot plots.
#pragma once
#include <string>
#include <vector>

namespace pd::bounds {

// How a row decides held / broken.
//   Ratio: held iff 1/tol <= measured/predicted <= tol        (tol is a factor, e.g. 1.5)
//   Bound: held iff measured <= tol * predicted               (prediction is an upper bound)
//   Slope: measured and predicted are log-log slopes; held iff |measured - predicted| <= tol
//   Below: held iff measured <= predicted (a hard threshold, tol unused)
//   Above: held iff measured >= predicted (a hard threshold, tol unused)
enum class CheckKind { Ratio, Bound, Slope, Below, Above };

struct CheckRow {
  std::string check;     // group: interference, circuits, capacity, uand, tms
  std::string quantity;  // what was measured, e.g. "mean cos^2"
  std::string params;    // e.g. "n=256 m=2048"
  CheckKind kind = CheckKind::Ratio;
  double measured = 0.0;
  double predicted = 0.0;
  double tol = 1.5;
  std::string note;  // optional: fitted constants, R^2, regime
  bool held() const;
  // measured/predicted for Ratio/Bound rows, measured-predicted for Slope/Below/Above rows.
  double compare() const;
};

const char* kind_name(CheckKind k);

struct LogLogFit {
  double slope = 0.0;
  double intercept = 0.0;  // log(y) = intercept + slope * log(x)
  double r2 = 0.0;
};
// Least squares of log(y) on log(x); throws if fewer than two points or any value <= 0.
LogLogFit fit_loglog(const std::vector<double>& x, const std::vector<double>& y, const std::string& what);

// Table output: JSON (array of row objects) and CSV, and a fixed-width text table.
void write_table_json(const std::string& path, const std::vector<CheckRow>& rows);
void write_table_csv(const std::string& path, const std::vector<CheckRow>& rows);
std::string format_table(const std::vector<CheckRow>& rows);
// The same table as GitHub Markdown (for docs/bounds.md).
std::string format_table_markdown(const std::vector<CheckRow>& rows);

// A plotted series: points (measured) or a line (fit / prediction).
struct PlotSeries {
  std::string title;
  std::vector<double> x, y;
  bool line = false;
  bool scatter = false;  // points without connecting lines
};
// Writes DIR/NAME.dat and DIR/NAME.gp and runs gnuplot to make DIR/NAME.png (log-log axes unless
// logx/logy are false) with pd::plot_png. Missing or failing gnuplot: prints a warning and returns
// false; throws ad::Error only when a file cannot be written.
bool plot_xy(const std::string& dir, const std::string& name, const std::string& title,
             const std::string& xlabel, const std::string& ylabel, const std::vector<PlotSeries>& series,
             bool logx = true, bool logy = true);
// Convenience: a line y = exp(intercept) * x^slope sampled at the given x range.
PlotSeries fit_line(const std::string& title, const LogLogFit& fit, double x_min, double x_max);

}  // namespace pd::bounds
