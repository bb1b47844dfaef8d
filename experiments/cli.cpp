#include "experiments/cli.hpp"

#include <charconv>

namespace pd {
std::map<std::string, Command>& command_registry() {
  static std::map<std::string, Command> registry;  // function-local: safe static-init order
  return registry;
}

CLI::Validator at_least(int64_t lo) {
  const std::string want = "a whole number >= " + std::to_string(lo);
  return CLI::Validator(
      [lo, want](std::string& s) -> std::string {
        int64_t v = 0;
        const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
        if (r.ec != std::errc() || r.ptr != s.data() + s.size() || v < lo) return "must be " + want + ", got " + s;
        return "";
      },
      want);
}

}  // namespace pd
