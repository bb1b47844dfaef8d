// `pd audit`: one SPD or APD training step of a config in float64, each parameter tensor's
// gradient checked against central finite differences on a sample of its coordinates (its
// largest-gradient ones, then random nonzero ones; random upstream scale, identical masks in
// every evaluation), with a tolerance relative to that tensor's gradient scale (its max
// |gradient|, gradcheck's scaled mode). Prints per tensor the gradient scale and the max
// absolute and relative error; returns false on any failure, and on a tensor whose gradient
// is zero everywhere (ZERO-GRAD: nothing could be checked).
//
// The lower leaky sigmoid's backward is deliberately not a derivative (it passes alpha*g for
// z <= 0 when g < 0), so the audited step uses leaky_alpha = 0, under which it is clamp's true
// derivative; the leak itself is audited with the engine's op audits.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

namespace decomp {

// trained = false audits a freshly initialised target of the config's architecture (same code
// path, no target training needed); true uses the config's trained target.
bool audit_config(const std::string& config_path, int64_t coords, int64_t batch, bool trained, std::ostream& out);

}  // namespace decomp
