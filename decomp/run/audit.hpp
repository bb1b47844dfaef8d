// `pd audit`: one SPD training step of a config in float64, each parameter tensor's gradient
// checked against central finite differences on a random sample of its coordinates (random
// upstream scale, identical masks in every evaluation). Prints per tensor the max absolute
// and relative error; returns false on any failure.
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
