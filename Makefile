# statusproxy — one plain Makefile.
#
#   make            build build/statusproxy
#   make run        install dependencies, build, start the proxy with the defaults
#   make test       install dependencies (and test tools), build, run every test
#   make test SANITIZE=1   the same under AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (30)
#   make soak       the chaos soak for SOAK_SECONDS (300) under AddressSanitizer
#   make bench      throughput ratios against a direct connection and HAProxy
#   make clean
#
# Dependencies come from Debian packages (see DEPS and TEST_DEPS); llhttp is
# compiled from the C sources that Debian's node-llhttp installs.

CC       ?= cc
SANITIZE ?= 0
WERROR   ?= 0
PYTHON   ?= /usr/bin/python3

ifeq ($(SANITIZE),1)
BUILD    := build/san
OPT      := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
BUILD    := build
OPT      := -O2
endif

LLHTTP_SRC_DIR := /usr/share/llhttp
LLHTTP_INC_DIR := /usr/share/include/llhttp

WARN     := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
ifeq ($(WERROR),1)
WARN     += -Werror
endif
PKGS     := libuv sqlite3 openssl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null || echo -luv -lsqlite3 -lssl -lcrypto)
CFLAGS_ALL = -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) -MMD -MP -Iproxy -I$(BUILD)/gen \
             -I$(LLHTTP_INC_DIR) $(PKG_CFLAGS) $(CFLAGS)
LDLIBS_ALL = $(PKG_LIBS) -lpthread -lm $(LDLIBS)
LDFLAGS_ALL = $(filter -fsanitize=%,$(OPT)) $(LDFLAGS)

BIN        := $(BUILD)/statusproxy
SRCS       := $(wildcard proxy/*.c)
OBJS       := $(SRCS:proxy/%.c=$(BUILD)/obj/%.o)
LIB_OBJS   := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
LLHTTP_OBJS := $(BUILD)/llhttp/llhttp.o $(BUILD)/llhttp/api.o $(BUILD)/llhttp/http.o
GEN_OBJS   := $(BUILD)/obj/gen_embedded.o
MIGRATIONS := $(sort $(wildcard migrations/*.sql))
EMBED_SRCS := $(MIGRATIONS) $(wildcard proxy/assets/*)

UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%)
# Test-only tools the end-to-end tests run (tests/tools/*.c).
TEST_TOOLS := $(BUILD)/tests/audit_feed $(BUILD)/tests/mint_leaf
# The benchmark's own origin server (tests/bench/backend.c).
BENCH_BACKEND := $(BUILD)/bench/backend
# The benchmark's HTTPS load generator, CONNECT included (tests/bench/tlsload.c).
BENCH_TLSLOAD := $(BUILD)/bench/tlsload

# Debian packages: what building and running need, and what the tests add.
DEPS       := build-essential pkg-config libuv1-dev node-llhttp libsqlite3-dev libssl-dev
TEST_DEPS  := curl python3 python3-pytest python3-requests sqlite3 openssl chromium nodejs
BENCH_DEPS := wrk haproxy valgrind mitmproxy squid-openssl
FUZZ_DEPS  := clang libclang-rt-14-dev

.PHONY: all run test unit e2e bench clean deps test-deps bench-deps fuzz fuzz-deps soak

all: $(BIN)

$(BIN): $(OBJS) $(LLHTTP_OBJS) $(GEN_OBJS)
	$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LDLIBS_ALL)

$(BUILD)/obj/%.o: proxy/%.c | $(BUILD)/gen/embedded.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

# llhttp is not our code: build it as shipped, without our warning set.
$(BUILD)/llhttp/%.o: $(LLHTTP_SRC_DIR)/%.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -g $(OPT) -w -I$(LLHTTP_INC_DIR) -c -o $@ $<

# Migrations and the live page are compiled into the binary, so it runs
# without the source tree.
$(BUILD)/gen/embedded.h: tools/embed.sh
	@mkdir -p $(dir $@)
	sh tools/embed.sh header > $@
$(BUILD)/gen/embedded.c: tools/embed.sh $(EMBED_SRCS) | $(BUILD)/gen/embedded.h
	@mkdir -p $(dir $@)
	sh tools/embed.sh source $(EMBED_SRCS) > $@
$(BUILD)/obj/gen_embedded.o: $(BUILD)/gen/embedded.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(BUILD)/tests/test_%: tests/unit/test_%.c tests/unit/unit.h $(LIB_OBJS) $(LLHTTP_OBJS) $(GEN_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests/unit $(LDFLAGS_ALL) -o $@ $< $(LIB_OBJS) $(LLHTTP_OBJS) $(GEN_OBJS) $(LDLIBS_ALL)

$(TEST_TOOLS): $(BUILD)/tests/%: tests/tools/%.c $(LIB_OBJS) $(LLHTTP_OBJS) $(GEN_OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LIB_OBJS) $(LLHTTP_OBJS) $(GEN_OBJS) $(LDLIBS_ALL)

$(BENCH_BACKEND): tests/bench/backend.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LDLIBS_ALL)

$(BENCH_TLSLOAD): tests/bench/tlsload.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(LDFLAGS_ALL) -o $@ $< $(LDLIBS_ALL)

deps:
	@sh tools/deps.sh $(DEPS)

test-deps:
	@sh tools/deps.sh $(DEPS) $(TEST_DEPS)

bench-deps:
	@sh tools/deps.sh $(DEPS) $(BENCH_DEPS)

run: deps
	$(MAKE) $(BIN)
	$(BIN) run --rules rules/default.rules $(RUN_ARGS)

unit: $(UNIT_BINS) $(TEST_TOOLS)
	@sh tools/run-unit.sh $(UNIT_BINS)

e2e: $(BIN) $(TEST_TOOLS)
	STATUSPROXY_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/e2e $(PYTEST_ARGS)

test: test-deps
	$(MAKE) $(BIN) $(UNIT_BINS) $(TEST_TOOLS)
	$(MAKE) unit
	$(MAKE) e2e

bench: bench-deps
	$(MAKE) $(BIN) $(BENCH_BACKEND) $(BENCH_TLSLOAD)
	STATUSPROXY_BIN=$(abspath $(BIN)) BENCH_BACKEND=$(abspath $(BENCH_BACKEND)) \
	  BENCH_TLSLOAD=$(abspath $(BENCH_TLSLOAD)) \
	  $(PYTHON) tests/bench/bench.py $(BENCH_ARGS)

# libFuzzer targets for the parsers of outside input and the wire path
# (tests/fuzz/fuzz_*.c), built with clang against every module but main.c;
# each runs FUZZ_SECONDS and the run fails on a crash. Seeds are read from
# tests/fuzz/seeds/NAME (the rule parser's from tests/unit/rules_golden) and
# never written; new inputs go to build/fuzz/NAME.corpus.
FUZZ_SECONDS ?= 30
FUZZ_SRCS  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -D_GNU_SOURCE -Iproxy -Ibuild/gen \
              -I$(LLHTTP_INC_DIR)

build/fuzz/%: tests/fuzz/%.c $(filter-out proxy/main.c,$(SRCS)) build/gen/embedded.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_FLAGS) -o $@ $^ $(LLHTTP_SRC_DIR)/*.c $(LDLIBS_ALL)

# The chaos soak (tests/e2e/test_chaos.py) for SOAK_SECONDS against the
# AddressSanitizer build; `make test` runs a 40 s version with the build it tests.
# Replay a failure with CHAOS_SEED=N (printed in the failure).
SOAK_SECONDS ?= 300
soak: test-deps
	$(MAKE) SANITIZE=1 build/san/statusproxy
	STATUSPROXY_BIN=$(abspath build/san/statusproxy) CHAOS_SECONDS=$(SOAK_SECONDS) \
	  $(PYTHON) -m pytest -q -s tests/e2e/test_chaos.py $(PYTEST_ARGS)

fuzz-deps:
	@sh tools/deps.sh $(DEPS) $(FUZZ_DEPS)

fuzz: fuzz-deps
	$(MAKE) $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do n=$${f##*/}; seeds=tests/fuzz/seeds/$$n; \
	  [ $$n = fuzz_rules ] && seeds=tests/unit/rules_golden; \
	  echo "== $$n ($(FUZZ_SECONDS)s, seeds $$seeds)"; mkdir -p $$f.corpus; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=20 -print_final_stats=1 \
	    $$f.corpus $$seeds >$$f.log 2>&1; rc=$$?; \
	  grep -E '^stat::(number_of_executed_units|average_exec_per_sec)|ERROR|SUMMARY|artifact' $$f.log; \
	  [ $$rc = 0 ] || { echo "$$n failed (exit $$rc): see $$f.log"; exit 1; }; done

clean:
	rm -rf build

-include $(OBJS:.o=.d) $(UNIT_BINS:=.d) $(TEST_TOOLS:=.d) $(BENCH_BACKEND:=.d) $(BENCH_TLSLOAD:=.d)
