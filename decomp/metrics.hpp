// Evaluation metrics for decompositions (METHODS section 5). Plain row-major double matrices,
// so they are independent of the engine and easy to test by hand.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace decomp {

struct Mat {
  int64_t rows = 0, cols = 0;
  std::vector<double> a;  // row-major
  Mat() = default;
  Mat(int64_t r, int64_t c, double v = 0) : rows(r), cols(c), a((size_t)(r * c), v) {}
  double& operator()(int64_t i, int64_t j) { return a[(size_t)(i * cols + j)]; }
  double operator()(int64_t i, int64_t j) const { return a[(size_t)(i * cols + j)]; }
};

// Maximum-weight assignment of each row to a distinct column (rows <= cols), Hungarian
// algorithm O(rows^2 cols). Returns col_of_row.
std::vector<int64_t> hungarian_max(const Mat& score);

// CI_L0: mean over examples (rows) of the number of entries > threshold.
double ci_l0(const Mat& ci, double threshold);
// Components (columns) whose CI exceeds the threshold on any example.
int64_t alive_components(const Mat& ci, double threshold);

// Subcomponents whose weight norm ||u_c v_c^T||_F = ||V[:, c]|| ||U[c, :]|| exceeds
// rel * max_c' of the same (the paper counts "subcomponents with non-negligible norm", e.g.
// n_hidden of them in the TMS identity layer). V: [d_in, C], U: [C, d_out].
// m > 1: component c is the columns [c m, (c + 1) m) (APD's rank-m components), its norm
// ||V_c U_c||_F.
int64_t large_norm_components(const Mat& V, const Mat& U, double rel = 0.1, int64_t m = 1);
// The norms themselves, ||P_c||_F per component c (V.cols / m of them).
std::vector<double> component_norms(const Mat& V, const Mat& U, int64_t m = 1);

// Identity pattern: ci [n, C] from one-hot inputs (row i = feature i). Columns permuted by
// Hungarian matching to maximise the diagonal; errors = diagonal entries < 0.9 plus
// off-diagonal entries > 0.1 (every other entry of the matrix). `order` (optional) receives
// the column order used: matched columns first, then the rest by descending mass.
int64_t identity_ci_error(const Mat& ci, std::vector<int64_t>* order = nullptr);
// Dense-k pattern: columns sorted by mass (descending); each of the first k must hold an
// entry >= 0.9 (else one error), every entry > 0.1 in the other columns is an error.
int64_t dense_k_error(const Mat& ci, int64_t k, std::vector<int64_t>* order = nullptr);
// How much of the dense-k block each feature switches on: the block is the first k columns in
// the dense-k order (by mass); per feature (row) count the block columns with CI > threshold.
// dense_k_error only asks each block column to reach 0.9 on some feature; the paper's picture
// (one block that co-activates for every feature) is every row counting k.
struct BlockCoverage {
  int64_t k = 0;           // block size asked for (columns beyond ci.cols count as never on)
  int64_t min = 0, max = 0;
  double median = 0;       // of the per-feature counts (mean of the two middle ones if even)
  int64_t features_using_all = 0;
};
BlockCoverage dense_k_block_coverage(const Mat& ci, int64_t k, double threshold);

// Component c is the columns [c m, (c + 1) m) of V [d_in, C m] and rows of U [C m, d_out]:
// P_c = V_c U_c [d_in, d_out] (m = 1: u_c v_c^T transposed). Row j of P_c, i.e. the component's
// part of the target's column j (feature j), into `row` [d_out].
void component_row(const Mat& V, const Mat& U, int64_t c, int64_t m, int64_t j, std::vector<double>& row);

// A matrix as text for a terminal: one line per row, "<row_label><i> |" then the entries in
// the column order `order` (empty: as stored; it may name fewer columns than m has), each
// printed with `decimals` decimals in a fixed width; entries with |value| < blank print as "."
// so a sparse CI matrix reads at a glance. Every line ends with a newline.
std::string mat_text(const Mat& m, const std::vector<int64_t>& order = {}, int decimals = 2, double blank = 0,
                     const std::string& row_label = "");

// TMS MMCS / ML2R. W: [d_out, d_in] target; V: [d_in, C], U: [C, d_out]; P_c = u_c v_c^T.
// For target column j: MMCS_j = max_c cos(P_c[:, j], W[:, j]), ML2R_j = ||P_best[:, j]|| / ||W[:, j]||.
// min_rel_norm > 0 restricts the max to subcomponents with ||u_c v_c^T|| > min_rel_norm * max_c'
// (the large_norm_components set): the METHODS definition (min_rel_norm 0) lets a near-zero
// subcomponent whose direction happens to align best win column j, so ML2R_j ~ 0 although a
// full-norm subcomponent carries the column.
struct MMCSResult {
  double mmcs = 0, ml2r = 0;
  std::vector<double> cos_per_col, ratio_per_col;
  std::vector<int64_t> best_c;
};
// m > 1: P_c = V_c U_c over the component's m columns (APD).
MMCSResult mmcs_ml2r(const Mat& W, const Mat& V, const Mat& U, double min_rel_norm = 0, int64_t m = 1);

}  // namespace decomp
