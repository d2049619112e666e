# datasphere. `make` builds build/datasphere; `make check` runs every test
# (unit, store contract, integration) against a build under AddressSanitizer
# and UndefinedBehaviorSanitizer; `make run` serves on the embedded defaults.
CC      ?= cc
PKGS    := libevent libevent_pthreads sqlite3 jansson libsodium hiredis
SANITIZE ?=
BUILD   ?= build
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -D_GNU_SOURCE -Wall -Wextra -Werror -Wformat=2 -Wshadow \
           -Wstrict-prototypes -Isrc $(shell pkg-config --cflags $(PKGS))
LDLIBS  := $(shell pkg-config --libs $(PKGS)) -lhttp_parser -lpthread -lm
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-sanitize-recover=all -fno-omit-frame-pointer
LDFLAGS += -fsanitize=$(SANITIZE)
endif

SRCS    := $(wildcard src/*.c src/*/*.c)
OBJS    := $(SRCS:src/%.c=$(BUILD)/obj/%.o)
LIBOBJS := $(filter-out $(BUILD)/obj/main.o,$(OBJS))
TESTS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
SAN     := build/san

.PHONY: all deps check unit integration run bench format clean
all: deps $(BUILD)/datasphere

deps:
	@scripts/deps.sh build

$(BUILD)/datasphere: $(OBJS)
	@echo "  LD  $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h src/*/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(LIBOBJS)
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIBOBJS) $(LDLIBS) -lcmocka

# Everything, under the sanitizers.
check:
	@scripts/deps.sh test
	$(MAKE) SANITIZE=address,undefined BUILD=$(SAN) unit integration

unit: $(BUILD)/datasphere $(TESTS)
	@set -e; for t in $(TESTS); do echo "== $$t"; $$t; done

integration: $(BUILD)/datasphere
	cd tests && DATASPHERE_BIN=$(CURDIR)/$(BUILD)/datasphere node --test --test-concurrency=1 integration/

run: all
	$(BUILD)/datasphere serve

bench: all
	bench/run.sh sqlite && bench/run.sh redis

format:
	clang-format -i $(SRCS) $(wildcard src/*.h src/*/*.h tests/unit/*.c)

clean:
	rm -rf build
