# herald — build, test, run, bench. `make` builds build/herald; `make test` and `make run` first run
# scripts/bootstrap.sh so that they are the whole setup on a fresh Debian 12 machine.

VERSION   := 0.1.0
PKGS      := libevent libcurl lua5.4 lua5.4-cjson sqlite3 jansson openssl
CC        ?= cc
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
                 -DHERALD_VERSION='"$(VERSION)"' $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS    := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
RELEASE_FLAGS := -O2 -g
ASAN_FLAGS    := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
# test-only hooks (crash points) exist in this build alone, never in build/herald
ASAN_FLAGS    += -DHERALD_TEST_HOOKS

TESTING_SRC := src/lua_testing.c
SRC       := $(filter-out $(TESTING_SRC),$(wildcard src/*.c))
LIB_SRC   := $(filter-out src/main.c,$(SRC))
PIC_OBJ   := $(patsubst src/%.c,build/pic/%.o,$(LIB_SRC) $(TESTING_SRC)) build/pic/lua_embedded.o
# teams.testing: the core as a Lua C module; Lua symbols come from the interpreter that loads it
TESTING_SO := build/lua/herald/testing_core.so
MODULE_LIBS := $(shell pkg-config --libs libevent libcurl lua5.4-cjson sqlite3 jansson openssl 2>/dev/null | sed 's/-llua5\.4 //g; s/-llua5\.4$$//') -lm
LUA_SRC   := $(sort $(wildcard lua/teams/*.lua))
EMBED_C   := build/gen/lua_embedded.c
# herald new's templates (dot files included), compiled into the binary like lua/teams
NEW_SRC   := $(sort $(shell find scripts/new -type f))
NEW_C     := build/gen/new_templates.c
DEFS_SRC  := $(sort $(wildcard lua/defs/teams/*.lua))
PREFIX    ?= /usr/local
UNIT_SRC  := $(wildcard tests/unit/test_*.c)

OBJ       := $(patsubst src/%.c,build/obj/%.o,$(SRC)) build/obj/lua_embedded.o build/obj/new_templates.o
ASAN_OBJ  := $(patsubst src/%.c,build/asan/obj/%.o,$(SRC)) build/asan/obj/lua_embedded.o \
             build/asan/obj/new_templates.o
ASAN_LIB_OBJ := $(filter-out build/asan/obj/main.o,$(ASAN_OBJ))
UNIT_BIN  := $(patsubst tests/unit/%.c,build/asan/%,$(UNIT_SRC))
FAULT_SHIM := build/fault_shim.so

.PHONY: all asan unit test run bench clean bootstrap fuzz testing soak install uninstall
all: build/herald $(TESTING_SO)

build/herald: $(OBJ)
	$(CC) $(RELEASE_FLAGS) -o $@ $^ $(LDLIBS)

build/asan/herald: $(ASAN_OBJ)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LDLIBS)

build/obj/%.o: src/%.c $(wildcard src/*.h) | build/obj
	$(CC) $(CFLAGS_COMMON) $(RELEASE_FLAGS) -c -o $@ $<

build/asan/obj/%.o: src/%.c $(wildcard src/*.h) | build/asan/obj
	$(CC) $(CFLAGS_COMMON) $(ASAN_FLAGS) -c -o $@ $<

build/obj/lua_embedded.o: $(EMBED_C) | build/obj
	$(CC) $(CFLAGS_COMMON) $(RELEASE_FLAGS) -c -o $@ $<

build/asan/obj/lua_embedded.o: $(EMBED_C) | build/asan/obj
	$(CC) $(CFLAGS_COMMON) $(ASAN_FLAGS) -c -o $@ $<

# The pure-Lua half of the teams module is compiled into the binary, so a deployed herald is one file.
$(EMBED_C): $(LUA_SRC) scripts/embed_lua.lua | build/gen
	lua5.4 scripts/embed_lua.lua $@ $(LUA_SRC)

build/obj/new_templates.o: $(NEW_C) | build/obj
	$(CC) $(CFLAGS_COMMON) $(RELEASE_FLAGS) -c -o $@ $<

build/asan/obj/new_templates.o: $(NEW_C) | build/asan/obj
	$(CC) $(CFLAGS_COMMON) $(ASAN_FLAGS) -c -o $@ $<

$(NEW_C): $(NEW_SRC) scripts/embed_files.lua src/scaffold.h | build/gen
	lua5.4 scripts/embed_files.lua $@ new_templates scripts/new/ $(NEW_SRC)

build/asan/test_%: tests/unit/test_%.c tests/unit/unit.h $(ASAN_LIB_OBJ)
	$(CC) $(CFLAGS_COMMON) $(ASAN_FLAGS) -Isrc -o $@ $< $(ASAN_LIB_OBJ) $(LDLIBS)

build/pic/%.o: src/%.c $(wildcard src/*.h) | build/pic
	$(CC) $(CFLAGS_COMMON) $(RELEASE_FLAGS) -fPIC -c -o $@ $<

build/pic/lua_embedded.o: $(EMBED_C) | build/pic
	$(CC) $(CFLAGS_COMMON) $(RELEASE_FLAGS) -fPIC -c -o $@ $<

$(TESTING_SO): $(PIC_OBJ) | build/lua/herald
	$(CC) -shared -o $@ $^ $(MODULE_LIBS)

testing: $(TESTING_SO)

build/obj build/asan/obj build/gen build/pic build/lua/herald:
	mkdir -p $@

asan: build/asan/herald $(FAULT_SHIM)
unit: $(UNIT_BIN)

# The fault suite's LD_PRELOAD shim (full disk, failing fsync where no tmpfs can be mounted). Not
# instrumented: it is preloaded into the ASan binary and into build/herald alike.
$(FAULT_SHIM): tests/fault_shim.c
	@mkdir -p build
	$(CC) -std=c11 -Wall -Wextra -Werror -O2 -fPIC -shared -o $@ $< -ldl

bootstrap:
	@scripts/bootstrap.sh

test: bootstrap
	$(MAKE) --no-print-directory all asan unit
	@tests/run_all.sh

run: bootstrap
	$(MAKE) --no-print-directory all
	@scripts/run_playground.sh

bench: bootstrap
	$(MAKE) --no-print-directory all
	@tests/bench/run.sh

clean:
	rm -rf build

# `make install` (PREFIX=/usr/local, DESTDIR for staging): the binary, and beside it what bot
# projects use (herald new points .busted and .luarc.json at them): the test kit teams.testing
# (share/herald/lua, lib/herald/lua/herald/testing_core.so) and the editor definitions
# (share/herald/lua/defs). herald finds them relative to its own binary.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/herald/lua/teams \
		$(DESTDIR)$(PREFIX)/share/herald/lua/defs/teams $(DESTDIR)$(PREFIX)/lib/herald/lua/herald
	install -m 0755 build/herald $(DESTDIR)$(PREFIX)/bin/herald
	install -m 0644 $(LUA_SRC) $(DESTDIR)$(PREFIX)/share/herald/lua/teams/
	install -m 0644 $(DEFS_SRC) $(DESTDIR)$(PREFIX)/share/herald/lua/defs/teams/
	install -m 0755 $(TESTING_SO) $(DESTDIR)$(PREFIX)/lib/herald/lua/herald/

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/herald
	rm -rf $(DESTDIR)$(PREFIX)/share/herald $(DESTDIR)$(PREFIX)/lib/herald

# ---- soak: the fault suite (tests/integration/jepsen.py; make test runs it short under ASan) run
# for SOAK_MINUTES against the release build. SEED=N repeats a run's plan (it is printed).
SOAK_MINUTES ?= 10
soak: bootstrap
	$(MAKE) --no-print-directory all $(FAULT_SHIM)
	HERALD_BIN=build/herald python3 tests/integration/jepsen.py --minutes $(SOAK_MINUTES) $(if $(SEED),--seed $(SEED))

# ---- fuzzing: one libFuzzer target per parser family (tests/fuzz/fuzz_<name>.c; README "Testing") ---
# `make fuzz` builds every target with clang and runs each for FUZZ_TIME seconds (default 60);
# FUZZ_TARGETS="tz schedule" picks some. The library is compiled once with coverage instrumentation
# into build/fuzz/libherald.a; each target links what it needs. New inputs go to
# build/fuzz/corpus/<name>, findings to build/fuzz/<name>-crash-* (tests/fuzz/corpus/<name> holds
# the seeds, tests/fuzz/run.sh prints one verdict line per target). tests/run_all.sh runs each briefly.
FUZZ_CC      ?= clang
FUZZ_FLAGS   := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_ALL     := jwt openid token connector headers tz schedule inbound notify
FUZZ_TARGETS ?= $(FUZZ_ALL)
FUZZ_TIME    ?= 60
FUZZ_ARGS    ?=
FUZZ_WORK    ?= build/fuzz/corpus
FUZZ_OBJ     := $(patsubst src/%.c,build/fuzz/obj/%.o,$(LIB_SRC)) build/fuzz/obj/lua_embedded.o
FUZZ_BIN     := $(patsubst %,build/fuzz/fuzz_%,$(FUZZ_TARGETS))

fuzz: $(FUZZ_BIN)
	@FUZZ_TIME=$(FUZZ_TIME) FUZZ_ARGS="$(FUZZ_ARGS)" FUZZ_WORK="$(FUZZ_WORK)" tests/fuzz/run.sh $(FUZZ_TARGETS)

build/fuzz/obj/%.o: src/%.c $(wildcard src/*.h) | build/fuzz/obj
	$(FUZZ_CC) $(CFLAGS_COMMON) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build/fuzz/obj/lua_embedded.o: $(EMBED_C) | build/fuzz/obj
	$(FUZZ_CC) $(CFLAGS_COMMON) $(FUZZ_FLAGS) -c -o $@ $<

build/fuzz/libherald.a: $(FUZZ_OBJ)
	rm -f $@
	ar rcs $@ $^

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(wildcard tests/fuzz/*.h) build/fuzz/libherald.a
	$(FUZZ_CC) $(CFLAGS_COMMON) $(FUZZ_FLAGS) -fsanitize=fuzzer -Isrc -Itests/fuzz -o $@ $< \
		build/fuzz/libherald.a $(LDLIBS)

build/fuzz/obj:
	mkdir -p $@
