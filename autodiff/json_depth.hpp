// The one path from JSON text to a value: parse_json (used for configs, safetensors headers,
// checkpoint and model metadata, metrics files) checks the nesting depth, refuses repeated keys
// and turns every nlohmann exception (syntax, number overflow such as 1e999) into an ad::Error
// that names the source.
//
// Nesting limit for JSON read from files (configs, safetensors headers, checkpoint metadata).
// nlohmann::json recurses per nesting level when it builds, copies or destroys values, so a
// hostile file of a few MB of '[' overflows the stack. check_json_depth scans the text once
// (brackets inside strings, escapes included, do not count) before anything parses it.
//
// DuplicateKeyFinder, a parser callback, finds a key repeated within one object: nlohmann::json
// silently keeps the last, so a hand-edited config with "lr" twice would run with whichever
// came last.
#pragma once
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ad {

constexpr int kMaxJsonDepth = 100;

// Throws ad::Error naming `source` and the depth if [ / { nest deeper than kMaxJsonDepth.
void check_json_depth(const char* begin, const char* end, const std::string& source);
inline void check_json_depth(const std::string& text, const std::string& source) {
  check_json_depth(text.data(), text.data() + text.size(), source);
}

// Parses [begin, end) as JSON. Throws ad::Error "<source>: <what>" on too deep nesting, a
// syntax error, a number out of range or a key repeated within one object ("<source>:
// train.lr: the key appears twice in one object ...").
nlohmann::json parse_json(const char* begin, const char* end, const std::string& source);
inline nlohmann::json parse_json(const std::string& text, const std::string& source) {
  return parse_json(text.data(), text.data() + text.size(), source);
}

// Pass to json::parse as its callback (std::ref(finder)); afterwards `first` holds the path of
// the first repeated key ("train.lr", "losses[1].coeff", "a" at the top level) or is empty.
class DuplicateKeyFinder {
 public:
  bool operator()(int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed);
  std::string first;

 private:
  struct Frame {
    bool object;
    std::set<std::string> keys;
    std::string key;    // object: the key being read
    int64_t index = 0;  // array: the element being read
  };
  std::string path_to(const std::string& key) const;
  std::vector<Frame> frames_;
};

}  // namespace ad
