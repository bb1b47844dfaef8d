// Subcommand registry for build/pd. Each subcommand lives in its own file and registers
// itself with PD_COMMAND, so adding a command never touches pd_main.cpp:
//
//   static int cmd_train(int argc, char** argv) { ... }
//   PD_COMMAND(train, "train a target model from a JSON config", cmd_train);
//
// argv[0] is the subcommand name; parse the rest with CLI11.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <map>
#include <string>

namespace pd {

using CommandFn = int (*)(int argc, char** argv);

struct Command {
  std::string summary;
  CommandFn fn;
};

std::map<std::string, Command>& command_registry();

struct CommandRegistration {
  CommandRegistration(const char* name, const char* summary, CommandFn fn) {
    command_registry()[name] = Command{summary, fn};
  }
};

// For count and seed options: a whole number >= lo, else the parse fails with
// "--steps: must be a whole number >= 0, got -5". Those options use -1 for "not given", so a
// negative value was silently ignored; CLI11's NonNegativeNumber would accept 2.5 and prints
// its range as "0 to 1.79e308".
CLI::Validator at_least(int64_t lo);

}  // namespace pd

#define PD_COMMAND(name, summary, fn) \
  static ::pd::CommandRegistration pd_command_registration_##name(#name, summary, fn)
