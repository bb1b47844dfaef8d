// Whole-file reads and atomic whole-file writes: the project's one writer for every output file.
//
// write_file_atomic writes to a temporary file in the target's directory (name
// temp_path_for(target), never the target itself), flushes and fsyncs it, renames it over
// the target and fsyncs the directory. A failure at any point removes the temporary file and
// throws ad::Error; the previous target file, if any, is left untouched. A process killed
// mid-write can leave a stray "*.tmp.*" file but never a half-written target; runs remove
// those of dead processes from their output folder when they start (prepare_output_dir).
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace ad {

// A fresh name next to `path` for a temporary file: "<path>.tmp.<pid>.<n>", n counting up per
// process, so concurrent writers (threads or processes) never share one.
std::string temp_path_for(const std::string& path);

void write_file_atomic(const std::string& path, const void* data, size_t size);
inline void write_file_atomic(const std::string& path, const std::string& bytes) {
  write_file_atomic(path, bytes.data(), bytes.size());
}
// A run's output folder made ready before any work: created with its parents, checked
// writable by writing and removing a probe file with write_file_atomic, and cleared of stale
// temporaries (remove_stale_temp_files). Throws ad::Error naming the folder, so a long run
// learns that it cannot save before it starts rather than after.
void prepare_output_dir(const std::string& dir);

// Removes the write_file_atomic temporaries in `dir` ("<name>.tmp.<pid>.<n>") whose writing
// process no longer runs (killed mid-write); a live process's, this one's included, are
// kept. Returns the names removed.
std::vector<std::string> remove_stale_temp_files(const std::string& dir);

// The whole file; throws ad::Error naming the file when it cannot be opened or read.
std::string read_file(const std::string& path);

}  // namespace ad
