#include "autodiff/json_depth.hpp"

#include "autodiff/error.hpp"

#include <functional>

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

nlohmann::json parse_json(const char* begin, const char* end, const std::string& source) {
  check_json_depth(begin, end, source);
  DuplicateKeyFinder duplicates;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(begin, end, std::ref(duplicates));
  } catch (const nlohmann::json::exception& e) {
    // "[json.exception.out_of_range.406] number overflow parsing '1e999'" -> the text after "] "
    std::string what = e.what();
    const size_t at = what.find("] ");
    if (what.rfind("[json.exception.", 0) == 0 && at != std::string::npos) what = what.substr(at + 2);
    fail(source + ": invalid JSON: " + clip_for_message(what, 200));
  }
  if (!duplicates.first.empty())
    fail(source + ": " + clip_for_message(duplicates.first) +
         ": the key appears twice in one object (JSON would keep only the last)");
  return j;
}

std::string DuplicateKeyFinder::path_to(const std::string& key) const {
  std::string path;
  for (size_t i = 0; i + 1 < frames_.size(); ++i)  // the container each nested frame sits in
    path += frames_[i].object ? (path.empty() ? "" : ".") + frames_[i].key : "[" + std::to_string(frames_[i].index) + "]";
  return path.empty() ? key : path + "." + key;
}

bool DuplicateKeyFinder::operator()(int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
  using E = nlohmann::json::parse_event_t;
  auto element_done = [&] {
    if (!frames_.empty() && !frames_.back().object) ++frames_.back().index;
  };
  switch (ev) {
    case E::object_start: frames_.push_back({true, {}, {}, 0}); break;
    case E::array_start: frames_.push_back({false, {}, {}, 0}); break;
    case E::object_end:
    case E::array_end:
      if (!frames_.empty()) frames_.pop_back();
      element_done();
      break;
    case E::key:
      if (!frames_.empty() && parsed.is_string()) {
        Frame& f = frames_.back();
        f.key = parsed.get<std::string>();
        if (!f.keys.insert(f.key).second && first.empty()) first = path_to(f.key);
      }
      break;
    case E::value: element_done(); break;
  }
  return true;
}

}  // namespace ad
