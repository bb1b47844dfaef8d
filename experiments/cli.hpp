// Subcommand registry for build/pd. Each subcommand lives in its own file and registers
// itself with PD_COMMAND, so adding a command never touches pd_main.cpp:
//
//   static int cmd_train(int argc, char** argv) { ... }
//   PD_COMMAND(train, "train a target model from a JSON config", cmd_train);
//
// argv[0] is the subcommand name; parse the rest with CLI11.
#pragma once
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

}  // namespace pd

#define PD_COMMAND(name, summary, fn) \
  static ::pd::CommandRegistration pd_command_registration_##name(#name, summary, fn)
