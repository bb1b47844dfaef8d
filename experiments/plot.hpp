// The one gnuplot driver: every PNG the experiments make (bounds, SPD) goes through plot_png.
//
// The script is written with ad::write_file_atomic and kept next to the image, so a plot can be
// re-rendered or edited by hand (`gnuplot NAME.gp`). gnuplot is started without a shell (no
// shell quoting of paths); paths inside the script go through gnuplot_quote. The image is
// rendered to a temporary name and renamed over `png` only when gnuplot exits with status 0 and
// wrote a non-empty file, so a missing or failing gnuplot never leaves a 0-byte or partial PNG;
// a PNG from an earlier run is then left as it was.
#pragma once
#include <string>

namespace pd {

// s as a gnuplot double-quoted string literal: `"` and `\` are backslash-escaped and a newline
// becomes \n, so any path or title (spaces, quotes, '$', '@', ...) reads back as itself.
std::string gnuplot_quote(const std::string& s);

// Writes script_path = "set terminal <terminal>\nset output <png, quoted>\n" + body and runs
// `program` (looked up in PATH) on it to make png. Returns true when png was made. Missing
// program, nonzero exit, a signal or an empty image: prints a warning naming png and the
// script (with gnuplot's messages, if any) to stderr and returns false. Throws ad::Error only
// when the script cannot be written.
bool plot_png(const std::string& script_path, const std::string& png, const std::string& terminal,
              const std::string& body, const std::string& program = "gnuplot");

}  // namespace pd
