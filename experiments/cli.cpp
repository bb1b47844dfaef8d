#include "experiments/cli.hpp"

namespace pd {
std::map<std::string, Command>& command_registry() {
  static std::map<std::string, Command> registry;  // function-local: safe static-init order
  return registry;
}
}  // namespace pd
