# infer - build the library, the command-line tool and the tests.
#
#   make                 libinfer.so / libinfer.a / the infer tool, under build/
#   make test            build and run the test suite
#   make sanitize        the test suite under AddressSanitizer + UBSan (build-asan/)
#   make fuzz FUZZ_SECONDS=N   run each libFuzzer target for N seconds (clang)
#   make install PREFIX=/usr/local
#
# Dependencies (Debian): libcjson-dev, libopenblas-serial-dev (or any
# libopenblas*-dev), libcmocka-dev (tests), pkg-config.

VERSION      := 0.1.0
SOVERSION    := 0
PREFIX       ?= /usr/local
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
BINDIR       ?= $(PREFIX)/bin

BUILD        ?= build
CC           ?= cc
MULTIARCH    := $(shell $(CC) -print-multiarch 2>/dev/null)
# OpenBLAS: the serial build, so that our own threads can call it at once.
BLAS_INC     ?= /usr/include/$(MULTIARCH)/openblas-serial
BLAS_LIB     ?= /usr/lib/$(MULTIARCH)/openblas-serial

WARN         := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
                -Wno-unused-parameter -Wpointer-arith -Wformat=2
OPT          ?= -O2 -g
ARCHFLAGS    ?= -march=x86-64-v2 -mtune=generic
CFLAGS_ALL    = -std=c11 -D_GNU_SOURCE $(OPT) $(ARCHFLAGS) $(WARN) -fPIC \
                -fvisibility=hidden -Iinclude -Isrc -I$(BLAS_INC) $(EXTRA_CFLAGS) $(CFLAGS)
LIBS         := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -lcjson -lpthread -lm $(EXTRA_LIBS)
LDFLAGS_ALL  := $(LDFLAGS) $(EXTRA_LDFLAGS)

LIB_SRC      := $(sort $(wildcard src/core/*.c src/io/*.c src/model/*.c src/backend/*.c \
                  src/backend/cpu/*.c src/*.c))
TOOL_SRC     := $(wildcard tools/*.c)
TEST_SRC     := $(sort $(wildcard tests/*.c))

LIB_OBJ      := $(LIB_SRC:%.c=$(BUILD)/%.o)
TOOL_OBJ     := $(TOOL_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ     := $(TEST_SRC:%.c=$(BUILD)/%.o)

SONAME       := libinfer.so.$(SOVERSION)
SHARED       := $(BUILD)/libinfer.so.$(VERSION)
STATIC       := $(BUILD)/libinfer.a
TOOL         := $(BUILD)/infer
TESTBIN      := $(BUILD)/infer-tests

BENCH_SRC    := $(wildcard bench/*.c)
BENCH_BIN    := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all lib tool test sanitize fuzz bench install uninstall clean
all: $(SHARED) $(STATIC) $(TOOL)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -MP -c $< -o $@

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
$(BUILD)/bench/%: $(BUILD)/bench/%.o $(STATIC)
	$(CC) $(LDFLAGS_ALL) -o $@ $< $(STATIC) $(LIBS)

test: $(TESTBIN) $(TOOL)
	$(TESTBIN)

sanitize:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	        EXTRA_LDFLAGS="-fsanitize=address,undefined" test

FUZZ_SECONDS ?= 30
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_BUILD   := build-fuzz
fuzz:
	@mkdir -p $(FUZZ_BUILD)
	@for t in $(FUZZ_TARGETS); do \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -I$(BLAS_INC) \
	    fuzz/$$t.c $(LIB_SRC) -o $(FUZZ_BUILD)/$$t $(LIBS) || exit 1; \
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
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@BLAS_LIB@|$(BLAS_LIB)|' infer.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/infer.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/infer.h $(DESTDIR)$(LIBDIR)/libinfer.* $(DESTDIR)$(BINDIR)/infer \
	      $(DESTDIR)$(LIBDIR)/pkgconfig/infer.pc

clean:
	rm -rf build build-asan build-fuzz

-include $(LIB_OBJ:.o=.d) $(TOOL_OBJ:.o=.d) $(TEST_OBJ:.o=.d)
