#include "autodiff/json_depth.hpp"

#include "autodiff/error.hpp"

namespace ad {

void check_json_depth(const char* begin, const char* end, const std::string& source) {
  int depth = 0;
  bool in_string = false;
  for (const char* p = begin; p < end; ++p) {
    const char c = *p;
    if (in_string) {
      if (c == '\\') ++p;  // skip the escaped character (\" does not end the string)
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxJsonDepth)
        fail(source + ": JSON nests deeper than " + std::to_string(kMaxJsonDepth) + " levels (depth " +
             std::to_string(depth) + " at byte " + std::to_string(p - begin) + ")");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

}  // namespace ad
