// Deterministic mutators for the fuzzing suite: each draws from an ad::Rng, so a seed names a
// case exactly (a failure report prints the seed; the case replays with that seed alone).
//
// mutate_safetensors takes a valid file and returns a hostile variant: truncations, header
// length edits, header JSON edits (dtypes, shapes, data_offsets, metadata values, extra or
// missing tensors, repeated keys, deep nesting, non-finite numbers), data byte flips and
// non-finite floats. mutate_config does the same to a JSON config: wrong types, out-of-range
// and non-finite numbers, huge sizes, deep nesting, long keys and strings, repeated keys,
// missing and unknown keys, truncation and byte flips.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "autodiff/random.hpp"

namespace fuzz {

std::string mutate_safetensors(const std::string& valid, ad::Rng& rng);
std::string mutate_config(const nlohmann::json& valid, ad::Rng& rng);

// The number of cases a fuzz test runs: `dflt`, scaled by PD_FUZZ_SCALE (a factor, e.g. 100 for
// a long run; `make fuzz FUZZ_SCALE=100`), at least 1.
int64_t case_count(int64_t dflt);

}  // namespace fuzz
