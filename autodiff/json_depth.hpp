// Nesting limit for JSON read from files (configs, safetensors headers, checkpoint metadata).
// nlohmann::json recurses per nesting level when it builds, copies or destroys values, so a
// hostile file of a few MB of '[' overflows the stack. check_json_depth scans the text once
// (brackets inside strings, escapes included, do not count) before anything parses it.
#pragma once
#include <cstddef>
#include <string>

namespace ad {

constexpr int kMaxJsonDepth = 100;

// Throws ad::Error naming `source` and the depth if [ / { nest deeper than kMaxJsonDepth.
void check_json_depth(const char* begin, const char* end, const std::string& source);
inline void check_json_depth(const std::string& text, const std::string& source) {
  check_json_depth(text.data(), text.data() + text.size(), source);
}

}  // namespace ad
