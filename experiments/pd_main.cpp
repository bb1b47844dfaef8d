// build/pd: the toolkit's command-line program. Subcommands register themselves
// (experiments/cli.hpp); this file only dispatches.
#include <cstdio>
#include <cstring>
#include <exception>

#include "experiments/cli.hpp"

static void print_help() {
  std::printf(
      "pd - parameter decomposition toolkit (APD / SPD / VPD) on a from-scratch autodiff engine\n\n"
      "usage: pd <command> [options]     (pd <command> --help for its options)\n\ncommands:\n");
  for (const auto& [name, cmd] : pd::command_registry())
    std::printf("  %-12s %s\n", name.c_str(), cmd.summary.c_str());
}

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    print_help();
    return argc < 2 ? 1 : 0;
  }
  auto& reg = pd::command_registry();
  auto it = reg.find(argv[1]);
  if (it == reg.end()) {
    std::fprintf(stderr, "pd: unknown command '%s' (pd --help lists them)\n", argv[1]);
    return 2;
  }
  try {
    return it->second.fn(argc - 1, argv + 1);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pd %s: error: %s\n", argv[1], e.what());
    return 1;
  }
}
