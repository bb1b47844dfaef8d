# Parameter-decomposition toolkit.
#   make            build everything into build/ (build/pd, build/pd_tests)
#   make test       build and run all tests (doctest)
#   make demo       SPD decomposition of TMS 5-2 from scratch: table, plots, report.html in runs/demo
#   make bench      benchmarks (figures only)
#   make tutorial   the tutorial programs (experiments/tutorial/*.cpp -> build/tutorial/*), docs/tutorial.md
#   make sanitize   build with ASan+UBSan into build-san/ and run the tests there
#   make fuzz       only the fuzzing suite; FUZZ_SCALE=100 runs 100 times its default cases
# BUILD=dir picks another build directory (helpers working in parallel use their own).

BUILD    ?= build
CXX      ?= g++
ARCH     ?= -mavx2 -mfma
# -O3: GCC 12 at -O2 vectorizes almost none of the elementwise loops (about 20% of an SPD step).
OPT      ?= -O3
# -fno-trapping-math: lets GCC turn `v > 0 ? g : 0 * g` style selects into vector blends (with
# trapping math it keeps a scalar branch per element: relu was 60x slower). Values are unchanged:
# the flag only drops the assumption that FP exceptions trap; nothing here reads FP flags.
# -fno-math-errno: with errno semantics GCC guards every sqrt with a branch to libm (errno for
# a negative argument), which keeps loops such as the Adam updates scalar. sqrt is correctly
# rounded either way, so values are unchanged; nothing here reads errno after a math call.
# -g1: function names and line tables, enough for perf and the sanitizers' stack traces, at
# about 2/3 of the compile time of -g (CI builds everything twice); DEBUG_INFO=-g for a debugger.
DEBUG_INFO ?= -g1
CXXFLAGS ?= $(OPT) $(ARCH) -fno-trapping-math -fno-math-errno $(DEBUG_INFO)
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# Appended even when CXXFLAGS is given on the command line.
ALL_CXXFLAGS = $(CXXFLAGS) $(EXTRA_FLAGS) -std=c++17 -Wall -Wextra -I. -MMD -MP
ALL_LDFLAGS  = $(LDFLAGS) $(EXTRA_FLAGS)
LDLIBS   += -lopenblas -lpthread

LIB_SRC  := $(sort $(wildcard autodiff/*.cpp models/*.cpp decomp/*.cpp decomp/*/*.cpp experiments/*.cpp experiments/*/*.cpp))
# Each tutorial program is one file with its own main(), linked against the whole library.
TUT_SRC  := $(sort $(wildcard experiments/tutorial/*.cpp))
LIB_SRC  := $(filter-out experiments/pd_main.cpp $(TUT_SRC),$(LIB_SRC))
TEST_SRC := $(sort $(wildcard tests/*.cpp tests/fuzz/*.cpp))
LIB_OBJ  := $(LIB_SRC:%.cpp=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.cpp=$(BUILD)/%.o)
TUT_OBJ  := $(TUT_SRC:%.cpp=$(BUILD)/%.o)
TUT_BIN  := $(TUT_SRC:experiments/tutorial/%.cpp=$(BUILD)/tutorial/%)
DEPS_OK  := $(BUILD)/.deps-ok

.PHONY: all test demo bench sanitize fuzz clean deps deps-torch deps-browser tutorial
all: $(BUILD)/pd $(BUILD)/pd_tests

deps: $(DEPS_OK)
$(DEPS_OK):
	@scripts/deps.sh
	@mkdir -p $(BUILD) && touch $@
deps-torch:
	@scripts/deps.sh --torch || echo "(PyTorch cross-checks will be skipped)"
deps-browser:
	@scripts/deps.sh --browser || echo "(the headless-browser report test will say it did not run)"

$(BUILD)/%.o: %.cpp | $(DEPS_OK)
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) -c $< -o $@

$(BUILD)/pd: $(LIB_OBJ) $(BUILD)/experiments/pd_main.o
	$(CXX) $(ALL_CXXFLAGS) $^ -o $@ $(ALL_LDFLAGS) $(LDLIBS)

$(BUILD)/pd_tests: $(LIB_OBJ) $(TEST_OBJ)
	$(CXX) $(ALL_CXXFLAGS) $^ -o $@ $(ALL_LDFLAGS) $(LDLIBS)

tutorial: $(TUT_BIN)
.SECONDARY: $(TUT_OBJ)
$(BUILD)/tutorial/%: $(BUILD)/experiments/tutorial/%.o $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CXX) $(ALL_CXXFLAGS) $^ -o $@ $(ALL_LDFLAGS) $(LDLIBS)

# TEST_ARGS passes doctest options, e.g. make test TEST_ARGS='-tc="*matmul*"'
# PD_TUTORIAL_DIR: where the tutorial test finds the programs (tests/test_tutorial.cpp);
# PD_BIN: the pd program the sweep test starts as child processes (tests/test_report.cpp).
test: all tutorial
	@$(MAKE) --no-print-directory deps-torch deps-browser
	PD_TUTORIAL_DIR=$(BUILD)/tutorial PD_BIN=$(BUILD)/pd $(BUILD)/pd_tests $(TEST_ARGS)

# The fuzzing suite alone (it is also part of make test); FUZZ_SCALE multiplies its case counts.
FUZZ_SCALE ?= 1
fuzz: all
	PD_FUZZ_SCALE=$(FUZZ_SCALE) $(BUILD)/pd_tests -tc='fuzz*,crash safety*' $(TEST_ARGS)

demo: $(BUILD)/pd
	$(BUILD)/pd decompose experiments/configs/spd_tms_5-2.json --out runs/demo
	@echo "report: runs/demo/report.html"

bench: $(BUILD)/pd
	$(BUILD)/pd bench

# Sanitizer build: ASan+UBSan, -O1 so it stays fast enough to run the full suite.
sanitize:
	$(MAKE) BUILD=build-san OPT=-O1 EXTRA_FLAGS="$(SANFLAGS)" all tutorial
	ASAN_OPTIONS=detect_leaks=1 PD_SANITIZE=1 PD_TUTORIAL_DIR=build-san/tutorial PD_BIN=build-san/pd build-san/pd_tests $(TEST_ARGS)

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(TUT_OBJ:.o=.d) $(BUILD)/experiments/pd_main.d
