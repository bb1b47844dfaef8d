// The project's one exception base. Project code throws ad::Error (usually through ad::fail)
// or a subclass of it (models::ConfigError, pd::bounds::PackingError), so a caller that wants
// every error the project reports catches `const ad::Error&`.
#pragma once
#include <stdexcept>
#include <string>

namespace ad {

// Thrown for every misuse the engine detects (shape mismatch, wrong dtype, released graph,
// non-finite values under the NaN guard; the message names the op and the shapes), for I/O
// failures (fileio, safetensors) and for bad arguments to experiment code.
struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
[[noreturn]] void fail(const std::string& msg);

// Text from an input file (a key, a value, a tensor name) as echoed in an error message: at
// most `max` characters; a longer one is cut, with "... (N bytes)" saying how long it was.
std::string clip_for_message(const std::string& text, size_t max = 80);

}  // namespace ad
