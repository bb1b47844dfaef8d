// safetensors: round trips, every malformed-file error, atomic writes, PyTorch interop.
#include <doctest/doctest.h>

#include <algorithm>

#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "autodiff/fileio.hpp"
#include "autodiff/random.hpp"
#include "autodiff/safetensors.hpp"

using ad::DType;
using ad::Shape;
using ad::Tensor;

namespace {

// A fresh directory under /tmp, removed (with its files) at scope exit.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/pd_safetensors_XXXXXX";
    const char* p = mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = opendir(path.c_str())) {
      while (dirent* e = readdir(d))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.push_back(e->d_name);
      closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
  }
  ~TempDir() {
    for (const std::string& f : files()) unlink((path + "/" + f).c_str());
    rmdir(path.c_str());
  }
};

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.raw(), b.raw(), a.node()->bytes()) == 0;
}

// 8-byte length + header text + `data_bytes` zero bytes.
std::string raw_file(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(&out[0], &n, 8);
  return out + header + std::string(data_bytes, '\0');
}

std::string decode_error(const std::string& bytes) {
  try {
    ad::decode_safetensors(bytes, "case.safetensors");
  } catch (const ad::Error& e) {
    return e.what();
  }
  return "(no error)";
}

const char* python() { return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3"; }

}  // namespace

TEST_CASE("safetensors: round trip float32 / float64 with metadata, scalars and empty tensors") {
  TempDir dir;
  ad::Rng rng(3);
  std::map<std::string, Tensor> ts = {
      {"layer.0.W", ad::rand_normal({4, 3}, 0, 1, rng, DType::f32)},
      {"layer.0.b", ad::rand_normal({4}, 0, 1, rng, DType::f64)},
      {"scale", ad::scalar(-0.125, DType::f64)},
      {"none", ad::zeros({0, 5}, DType::f32)},
      {"deep", ad::rand_normal({1, 2, 1, 2, 1, 2}, 0, 1, rng, DType::f32)},
  };
  const std::string path = dir.path + "/model.safetensors";
  ad::save_safetensors(path, ts, {{"step", "1000"}, {"config", "{\"lr\": 0.001}"}});

  const std::string bytes = ad::read_file(path);
  uint64_t hlen;
  std::memcpy(&hlen, bytes.data(), 8);
  CHECK(hlen % 8 == 0);  // data buffer starts 8-byte aligned

  ad::SafeTensors back = ad::load_safetensors(path);
  REQUIRE(back.tensors.size() == ts.size());
  for (const auto& [name, t] : ts) {
    INFO(name);
    REQUIRE(back.tensors.count(name));
    CHECK(same_bits(back.tensors[name], t));
    CHECK_FALSE(back.tensors[name].requires_grad());
  }
  CHECK(back.file_dtypes["layer.0.W"] == "F32");
  CHECK(back.file_dtypes["layer.0.b"] == "F64");
  CHECK(back.metadata.size() == 2);
  CHECK(back.metadata["config"] == "{\"lr\": 0.001}");
  CHECK(dir.files() == std::vector<std::string>{"model.safetensors"});  // no temp file left
}

TEST_CASE("safetensors: malformed files give an error naming the file and the problem") {
  struct Case {
    const char* what;
    std::string bytes;
    const char* expect;
  };
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string huge_len(8, '\0');
  const uint64_t big = 1000;
  std::memcpy(&huge_len[0], &big, 8);
  huge_len += "{}";
  std::string valid = raw_file(ok, 8);
  std::vector<Case> cases = {
      {"truncated before the length", std::string("\x10\0\0", 3), "truncated"},
      {"header length beyond the file", huge_len, "bad header length 1000"},
      {"absurd header length", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10), "bad header length"},
      {"bad JSON", raw_file(R"({"a":{"dtype":"F32",)", 8), "header: invalid JSON"},
      {"header not an object", raw_file("[1,2]", 0), "not a JSON object"},
      {"missing dtype", raw_file(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", 8), "'dtype'"},
      {"unknown dtype", raw_file(R"({"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2), "unknown dtype 'F8_E4M3'"},
      {"negative dim", raw_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative"},
      {"offsets out of range", raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "out of range"},
      {"reversed offsets", raw_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", 8), "reversed"},
      {"shape/size mismatch", raw_file(R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", 8), "needs 16 bytes but data_offsets span 8"},
      {"overlapping offsets",
       raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       "overlap"},
      {"gap between tensors",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       "gap"},
      {"trailing bytes", raw_file(ok, 12), "4 trailing bytes"},
      {"duplicate name",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       "header: a: the key appears twice"},
      {"duplicate key inside an entry",
       raw_file(R"({"a":{"dtype":"F32","shape":[1],"dtype":"F64","data_offsets":[0,4]}})", 4), "header: a.dtype: the key appears twice"},
      {"duplicate metadata key", raw_file(R"({"__metadata__":{"step":"3","step":"4"}})", 0), "header: __metadata__.step: the key appears twice"},
      {"non-string metadata", raw_file(R"({"__metadata__":{"step":3}})", 0), "'__metadata__' value of 'step'"},
      {"too many dims", raw_file(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1],"data_offsets":[0,4]}})", 4), "7 dimensions"},
      {"I64 beyond 2^53", raw_file(R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 0) + std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8),
       "not exactly representable"},
      {"valid file cut short", valid.substr(0, valid.size() - 3), "out of range"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string msg = decode_error(c.bytes);
    CHECK_MESSAGE(msg.find("case.safetensors") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(c.expect) != std::string::npos, msg);
  }
  CHECK(decode_error(valid) == "(no error)");  // the base of the cut-short case is fine

  // From disk the message names the path; a missing file is an error too.
  TempDir dir;
  const std::string path = dir.path + "/broken.safetensors";
  ad::write_file_atomic(path, valid.substr(0, 20));
  CHECK_THROWS_WITH_AS(ad::load_safetensors(path), doctest::Contains(path.c_str()), ad::Error);
  CHECK_THROWS_WITH_AS(ad::load_safetensors(dir.path + "/missing.safetensors"), doctest::Contains("missing.safetensors"),
                       ad::Error);
}

TEST_CASE("safetensors: reads F16 / BF16 / integer dtypes, converting to float") {
  // F16: 1.5 = 0x3e00, -2.25 = 0xc080, 65504 = 0x7bff, 2^-20 (subnormal) = 0x0010, -inf = 0xfc00
  // BF16: -3.140625 = 0xc049;  I32: -8;  U8: 200;  BOOL: 1
  std::string data;
  auto put16 = [&](uint16_t v) { data.append(reinterpret_cast<const char*>(&v), 2); };
  for (uint16_t h : {0x3e00, 0xc080, 0x7bff, 0x0010, 0xfc00}) put16((uint16_t)h);
  put16(0xc049);
  const int32_t i32 = -8;
  data.append(reinterpret_cast<const char*>(&i32), 4);
  data += '\xc8';
  data += '\x01';
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[5],"data_offsets":[0,10]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]},)"
      R"("i":{"dtype":"I32","shape":[1,1],"data_offsets":[12,16]},"u":{"dtype":"U8","shape":[],"data_offsets":[16,17]},)"
      R"("t":{"dtype":"BOOL","shape":[1],"data_offsets":[17,18]}})";
  ad::SafeTensors st = ad::decode_safetensors(raw_file(header, 0) + data, "mixed");
  const Tensor& h = st.tensors["h"];
  CHECK(h.dtype() == DType::f32);
  CHECK(h.item(0) == 1.5);
  CHECK(h.item(1) == -2.25);
  CHECK(h.item(2) == 65504.0);
  CHECK(h.item(3) == std::ldexp(1.0, -20));
  CHECK(h.item(4) == -std::numeric_limits<double>::infinity());
  CHECK(st.tensors["b"].item(0) == -3.140625);
  CHECK(st.tensors["i"].dtype() == DType::f64);
  CHECK(st.tensors["i"].item(0) == -8.0);
  CHECK(st.tensors["u"].item(0) == 200.0);
  CHECK(st.tensors["t"].item(0) == 1.0);
  CHECK(st.file_dtypes["h"] == "F16");
}

TEST_CASE("safetensors: a failed write leaves the previous file intact and no temp file") {
  TempDir dir;
  const std::string path = dir.path + "/ckpt.safetensors";
  Tensor old_t = ad::from_vector({1, 2, 3}, {3}, DType::f64);
  ad::save_safetensors(path, {{"w", old_t}}, {{"step", "1"}});
  const std::string before = ad::read_file(path);

  // Make the write fail half way: the file-size limit stops the temp file at 4 KiB.
  ad::Rng rng(1);
  Tensor big = ad::rand_normal({64, 256}, 0, 1, rng, DType::f32);  // 64 KiB
  rlimit saved;
  getrlimit(RLIMIT_FSIZE, &saved);
  rlimit small = saved;
  small.rlim_cur = 4096;
  auto prev_handler = signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  std::string err = "(no error)";
  try {
    ad::save_safetensors(path, {{"w", big}}, {{"step", "2"}});
  } catch (const ad::Error& e) {
    err = e.what();
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, prev_handler);
  CHECK_MESSAGE(err.find("ckpt.safetensors") != std::string::npos, err);
  CHECK_MESSAGE(err.find("write failed") != std::string::npos, err);
  CHECK(ad::read_file(path) == before);
  CHECK(dir.files() == std::vector<std::string>{"ckpt.safetensors"});

  // A process killed mid-write (default SIGXFSZ action) leaves at most a stray temp file,
  // whose name is never the target; the target still loads with the old contents.
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    rlimit no_core{0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    signal(SIGXFSZ, SIG_DFL);
    setrlimit(RLIMIT_FSIZE, &small);
    try {
      ad::save_safetensors(path, {{"w", big}});
    } catch (...) {
      _exit(3);
    }
    _exit(4);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGXFSZ);
  ad::SafeTensors back = ad::load_safetensors(path);
  CHECK(same_bits(back.tensors["w"], old_t));
  CHECK(back.metadata["step"] == "1");
  REQUIRE(dir.files().size() == 2);
  const std::string stray = dir.files()[1];
  CHECK(stray.rfind("ckpt.safetensors.tmp." + std::to_string((long)pid) + ".", 0) == 0);
  // The killed writer no longer runs, so its temporary is removed; a running writer's is kept.
  const std::string live = "ckpt.safetensors.tmp." + std::to_string((long)getpid()) + ".99";
  ad::write_file_atomic(dir.path + "/" + live, "in flight");
  CHECK(ad::remove_stale_temp_files(dir.path) == std::vector<std::string>{stray});
  CHECK(dir.files() == std::vector<std::string>{"ckpt.safetensors", live});
}

TEST_CASE("safetensors: interop with PyTorch (tests/torch/safetensors_interop.py)") {
  const std::string script = "tests/torch/safetensors_interop.py";
  if (access(script.c_str(), R_OK) != 0) {
    MESSAGE("skipped: " << script << " not found (run the tests from the repository root)");
    return;
  }
  TempDir dir;
  const std::string from_torch = dir.path + "/from_torch.safetensors";
  const std::string cmd = std::string(python()) + " " + script + " write " + from_torch + " 2>&1";
  const int rc = std::system(cmd.c_str());
  if (WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
    MESSAGE("skipped: PyTorch is not installed (apt-get install python3-torch)");
    return;
  }
  REQUIRE_MESSAGE(WIFEXITED(rc), "python writer crashed");
  REQUIRE_MESSAGE(WEXITSTATUS(rc) == 0, "python writer failed: " << cmd);

  ad::SafeTensors st = ad::load_safetensors(from_torch);
  CHECK(st.metadata["source"] == "torch");
  const Tensor& w32 = st.tensors["w_f32"];
  REQUIRE(w32.shape() == Shape({2, 3}));
  for (int i = 0; i < 6; ++i) CHECK(w32.item(i) == i * 0.5 - 1.0);
  const Tensor& w64 = st.tensors["w_f64"];
  REQUIRE(w64.shape() == Shape({2, 2, 2}));
  for (int i = 0; i < 8; ++i) CHECK(w64.item(i) == (i - 3) / 7.0);
  const Tensor& h = st.tensors["h_f16"];
  CHECK(h.item(2) == 65504.0);
  CHECK(h.item(3) == std::ldexp(1.0, -20));
  CHECK(std::isinf(h.item(4)));
  CHECK(st.tensors["b_bf16"].item(1) == -3.140625);
  CHECK(st.tensors["b_bf16"].item(2) == std::ldexp(1.0, 100));
  CHECK(st.tensors["i64"].item(3) == std::ldexp(1.0, 40));
  CHECK(st.tensors["i32"].shape() == Shape({2, 1}));
  CHECK(st.tensors["i32"].item(1) == -8.0);
  CHECK(st.tensors["scalar"].shape().nd == 0);
  CHECK(st.tensors["scalar"].item() == 2.5);
  CHECK(st.tensors["empty"].shape() == Shape({0, 3}));

  // Ours -> torch: the script checks values bit for bit and the metadata.
  std::vector<double> a(12), b(6);
  for (int i = 0; i < 12; ++i) a[i] = (i - 3) / 7.0;
  for (int i = 0; i < 6; ++i) b[i] = (i - 3) / 7.0 * 1e-3;
  const std::string ours = dir.path + "/ours.safetensors";
  ad::save_safetensors(ours, {{"a_f32", ad::from_vector(a, {3, 4}, DType::f32)}, {"b_f64", ad::from_vector(b, {2, 1, 3}, DType::f64)}},
                       {{"writer", "pd"}, {"step", "42"}});
  const std::string cmd2 = std::string(python()) + " " + script + " read " + ours + " 2>&1";
  const int rc2 = std::system(cmd2.c_str());
  CHECK_MESSAGE((WIFEXITED(rc2) && WEXITSTATUS(rc2) == 0), "torch could not read our file back: " << cmd2);
}
