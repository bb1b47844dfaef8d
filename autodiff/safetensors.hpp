// The safetensors file format (https://github.com/huggingface/safetensors), read and write.
//
// Layout: 8-byte little-endian unsigned header length N, then N bytes of JSON,
//   {"<name>": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}            (metadata optional, strings only)
// then the data buffer; offsets are relative to the buffer start, tensors are row-major
// little-endian. We write F32 / F64 (the tensor's dtype), tensors in name order, header
// padded with spaces to a multiple of 8 bytes, atomically (autodiff/fileio.hpp).
//
// Reading accepts F32 and F64 as they are, and converts F16 / BF16 / I8 / U8 / I16 / BOOL
// to float32 and I32 / I64 to float64 (an I64 beyond 2^53 in magnitude is an error, since it
// would not convert exactly). Every malformed file -- truncated, bad header length, bad
// JSON, missing or wrong-typed field, unknown dtype, offsets out of range / overlapping /
// leaving gaps, byte span not matching the shape -- gives an ad::Error naming the file, the
// tensor and the problem.
#pragma once
#include <map>
#include <string>

#include "autodiff/tensor.hpp"

namespace ad {

struct SafeTensors {
  std::map<std::string, Tensor> tensors;        // leaves, no gradient
  std::map<std::string, std::string> metadata;  // the "__metadata__" map
  std::map<std::string, std::string> file_dtypes;  // name -> dtype as stored ("F16", ...)
};

void save_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
SafeTensors load_safetensors(const std::string& path);

// The same, in memory; `source` names the data in error messages.
std::string encode_safetensors(const std::map<std::string, Tensor>& tensors,
                               const std::map<std::string, std::string>& metadata = {});
SafeTensors decode_safetensors(const std::string& bytes, const std::string& source);

}  // namespace ad
