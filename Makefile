# outboxd: `make run` brings up the whole system, `make test` proves it.
# Everything a fresh machine needs is installed by `make deps`.

SHELL   := /bin/bash
CC      ?= gcc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2
# The one place the version lives: a clean clone may have no tags, and the
# Debian package takes its version from here too.
VERSION := $(shell cat VERSION)
# The caller's CFLAGS, CPPFLAGS and LDFLAGS (dpkg-buildflags, in a package
# build) come after ours: their hardening is honoured and -Werror still holds.
# Read once, at the top: make hands a sub-make ($(MAKE) build, asan) the
# environment's CFLAGS with our expanded value, which would be appended again.
ifeq ($(origin USER_CFLAGS),undefined)
USER_CFLAGS  := $(CFLAGS)
USER_LDFLAGS := $(LDFLAGS)
endif
export USER_CFLAGS USER_LDFLAGS
CFLAGS  := -std=gnu11 -D_GNU_SOURCE $(OPT) -g -fcallgraph-info -Wall -Wextra -Werror -Wno-missing-field-initializers -Wno-format-truncation \
           -I. -I/usr/include/postgresql -pthread -DOB_VERSION='"$(VERSION)"' $(SAN) $(EXTRA_CFLAGS) $(CPPFLAGS) $(USER_CFLAGS)
LDFLAGS := -pthread $(SAN) $(USER_LDFLAGS)
LIBS    := -lpq -lrdkafka -lcivetweb -lmsgpackc -ljansson -linih -lcrypto -ldl
TEST_LIBS := $(LIBS) -lcriterion

CONFIG  ?= outboxd.conf
FUZZ_SECONDS ?= 10
# e.g. INTEG_FLAGS=--verbose: each integration test's duration (where CI time goes)
INTEG_FLAGS ?=

SRC := $(wildcard common/*.c shm/*.c supervisor/*.c cli/*.c workers/http/*.c workers/relay/*.c workers/consumer/*.c)
SQL := $(sort $(wildcard sql/outbox/*.sql)) $(sort $(wildcard sql/orderdb/*.sql)) $(sort $(wildcard sql/ledgerdb/*.sql))
GEN := $(BUILD)/gen/migrations.c
OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(SRC)) $(BUILD)/obj/gen/migrations.o
LIB_OBJ := $(filter-out $(BUILD)/obj/cli/main.o,$(OBJ))

UNIT_SRC := $(wildcard tests/unit/*.c) tests/fault/checker.c tests/fault/emit_check.c tests/fault/check_util.c
HARNESS_SRC := $(wildcard tests/harness/*.c)
INTEG_SRC := $(wildcard tests/integration/*.c) $(HARNESS_SRC)
FAULT_SRC := $(wildcard tests/fault/*.c) $(HARNESS_SRC)
FUZZ_SRC := $(wildcard tests/fuzz/*.c)
FUZZ_BIN := $(BUILD)/tests/fuzz_order_req
UNIT_BIN := $(BUILD)/tests/unit
INTEG_BIN := $(BUILD)/tests/integration
FAULT_BIN := $(BUILD)/tests/fault

.PHONY: all deps build asan run test chaos chaos-ha check-structure docs test-unit test-integration stack-up stack-down stack-status migrate clean \
        man install uninstall deb test-package check-rules test-prometheus

all: build
build: $(BUILD)/outboxd

$(BUILD)/outboxd: $(OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/obj/%.o: %.c $(wildcard common/*.h shm/*.h supervisor/*.h cli/*.h workers/*/*.h tests/*.h tests/harness/*.h tests/fault/*.h tests/integration/*.h)
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

# Only cli/version.c reads OB_VERSION; a new VERSION rebuilds it.
$(BUILD)/obj/cli/version.o: VERSION

$(GEN): $(SQL) scripts/embed_sql.sh
	@mkdir -p $(dir $@)
	bash scripts/embed_sql.sh $@ $(SQL)

$(BUILD)/obj/gen/migrations.o: $(GEN)
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) -c -o $@ $<

$(UNIT_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(UNIT_SRC)) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS)

$(FUZZ_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(FUZZ_SRC)) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(INTEG_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(INTEG_SRC)) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS)

$(FAULT_BIN): $(patsubst %.c,$(BUILD)/obj/%.o,$(FAULT_SRC)) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS)

deps:
	@bash scripts/deps.sh

stack-up: deps
	@bash scripts/stack.sh up
stack-down:
	@bash scripts/stack.sh down
stack-status:
	@bash scripts/stack.sh status

migrate: build stack-up
	$(BUILD)/outboxd migrate -c $(CONFIG)

run: deps build stack-up
	$(BUILD)/outboxd migrate -c $(CONFIG)
	exec $(BUILD)/outboxd -f -c $(CONFIG)

# Unit tests need no stack; integration tests drive $(BUILD)/outboxd against
# the real PostgreSQL clusters and Kafka, on databases and topics of their own.
test: deps
	$(MAKE) build $(UNIT_BIN) $(INTEG_BIN) $(FAULT_BIN) $(FUZZ_BIN)
	$(MAKE) check-structure
	$(if $(SKIP_FAULT),@echo "alert rules and package test: not repeated here (SKIP_FAULT: promtool and dpkg -i check files and not the memory of the binary)",\
	    $(MAKE) check-rules test-package)
	@bash scripts/stack.sh up
	$(UNIT_BIN) --jobs 2
	$(FUZZ_BIN) -runs=3000000 -seconds=$(FUZZ_SECONDS) tests/fuzz/corpus
	$(INTEG_ENV) OB_BIN=$(abspath $(BUILD)/outboxd) $(INTEG_BIN) --jobs 1 $(INTEG_FLAGS)
	$(if $(SKIP_FAULT),@echo "fault tier: not repeated here (SKIP_FAULT: it proves distributed behaviour, which a sanitizer does not check)",\
	    $(INTEG_ENV) OB_BIN=$(abspath $(BUILD)/outboxd) $(FAULT_BIN) --jobs 1 --filter 'fault/*')
	$(if $(SKIP_FAULT),,bash tests/readme/own_service.sh)
	$(if $(SKIP_FAULT),,OB_BIN=$(abspath $(BUILD)/outboxd) bash tests/prometheus/live.sh)

# The architecture as rules a change cannot break unnoticed: the supervisor
# talks to no database, Kafka or JSON (cli/ does); no two files call each
# other, directly or through others (gcc's call graph of this build, one .ci
# beside each object); no two folders include each other. The checker must
# also catch a circle planted on purpose, or a pass would prove nothing.
check-structure: build
	@! grep -lE 'libpq-fe.h|librdkafka|common/pg.h|jansson.h' supervisor/*.c
	@bash scripts/callcircles.sh calls $(OBJ:.o=.ci)
	@bash scripts/callcircles.sh includes $(wildcard $(SRC) common/*.h shm/*.h supervisor/*.h cli/*.h workers/*/*.h) && echo "structure: no call circle between files, no include circle between folders"
	bash tests/structure/planted_circle.sh
	@$(BUILD)/outboxd config-reference | diff -u docs/CONFIG.md - >/dev/null || \
	    { echo "docs/CONFIG.md is stale: run make docs"; $(BUILD)/outboxd config-reference | diff -u docs/CONFIG.md -; exit 1; }

# docs/CONFIG.md is written from the config key table (common/cfg.c), never by hand.
docs: build
	$(BUILD)/outboxd config-reference >docs/CONFIG.md

# The whole fault suite with longer loads; a table per scenario goes to
# var/chaos/report.md, written even when a scenario fails.
chaos: deps
	$(MAKE) build $(FAULT_BIN)
	@bash scripts/stack.sh up
	@mkdir -p var/chaos && rm -f var/chaos/rows.tsv
	st=0; OB_CHAOS_LONG=1 OB_CHAOS_REPORT=$(abspath var/chaos/rows.tsv) OB_BIN=$(abspath $(BUILD)/outboxd) \
	    $(FAULT_BIN) --jobs 1 --verbose || st=$$?; \
	    bash scripts/chaos_report.sh var/chaos/rows.tsv >var/chaos/report.md; \
	    cat var/chaos/report.md; exit $$st

# The production-topology tier (tests/fault/test_ha.c, test_failover.c,
# test_partition.c) on a three-node KRaft cluster, an orders primary/standby
# pair beside the stack and two application hosts (network namespaces); its
# table goes to var/chaos-ha/report.md. All stay up for a rerun:
# bash scripts/kafka_ha.sh down, bash scripts/pg_ha.sh down and
# bash scripts/netns.sh down stop them.
chaos-ha: deps
	$(MAKE) build $(FAULT_BIN)
	@bash scripts/stack.sh up
	@bash scripts/kafka_ha.sh up
	@bash scripts/pg_ha.sh reset --sync
	@bash scripts/netns.sh up 2
	@mkdir -p var/chaos-ha && rm -f var/chaos-ha/rows.tsv
	st=0; OB_TEST_BROKERS=$$(bash scripts/kafka_ha.sh brokers) OB_CHAOS_REPORT=$(abspath var/chaos-ha/rows.tsv) OB_TEST_NETNS=1 \
	    OB_TEST_ORDERS_HOSTS=127.0.0.1:$${OB_PG_HA_PRIMARY_PORT:-26432},127.0.0.1:$${OB_PG_HA_STANDBY_PORT:-26433} \
	    OB_BIN=$(abspath $(BUILD)/outboxd) $(FAULT_BIN) --jobs 1 --verbose --filter 'fault_ha/*' || st=$$?; \
	    bash scripts/chaos_report.sh var/chaos-ha/rows.tsv >var/chaos-ha/report.md; \
	    cat var/chaos-ha/report.md; exit $$st

test-unit: $(UNIT_BIN)
	$(UNIT_BIN) --jobs 2
test-integration: build $(INTEG_BIN)
	OB_BIN=$(abspath $(BUILD)/outboxd) $(INTEG_BIN) --jobs 1

# AddressSanitizer + UBSan build of everything, then the same tests except
# those a sanitizer cannot help: the fault tier (distributed behaviour under
# injected faults, about 8 minutes here) and the secure-Kafka test (Kafka's
# refusals), so .ci/run stays within its time budget.
# Leak checking stays on for the unit tests; the forked workers of the real
# binary exit through library teardown paths we do not own, so it is off there.
asan:
	$(MAKE) build BUILD=build/asan OPT=-O1 SAN="$(ASAN_FLAGS)"
	$(MAKE) test BUILD=build/asan OPT=-O1 SAN="$(ASAN_FLAGS)" \
	    INTEG_ENV="ASAN_OPTIONS=detect_leaks=0 OB_TEST_SLOW=2 OB_SKIP_KAFKA_SECURE=1" SKIP_FAULT=1

ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

clean:
	rm -rf build

# Man pages come from the binary: outboxd(8) from its command table,
# outboxd.conf(5) from the key table that also writes docs/CONFIG.md.
MAN := $(BUILD)/man/outboxd.8 $(BUILD)/man/outboxd.conf.5
man: $(MAN)
$(BUILD)/man/outboxd.8: $(BUILD)/outboxd
	@mkdir -p $(dir $@)
	$< manpage 8 >$@
$(BUILD)/man/outboxd.conf.5: $(BUILD)/outboxd
	@mkdir -p $(dir $@)
	$< manpage 5 >$@

# `make install`: GNU directory variables, FHS layout. The config is
# installed only when none is there, 0640 since it holds DSNs and secrets.
PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
SYSCONFDIR ?= $(PREFIX)/etc
MANDIR     ?= $(PREFIX)/share/man
DATADIR    ?= $(PREFIX)/share/outboxd
UNITDIR    ?= $(PREFIX)/lib/systemd/system
RULES      := packaging/prometheus/outboxd-rules.yml
SHARE_DOCS := docs/DESIGN.md docs/CONFIG.md docs/least-privilege.sql README.md
INSTALLED  := $(SBINDIR)/outboxd $(MANDIR)/man8/outboxd.8 $(MANDIR)/man5/outboxd.conf.5 \
              $(DATADIR)/outboxd-rules.yml $(addprefix $(DATADIR)/docs/,$(notdir $(SHARE_DOCS))) \
              $(UNITDIR)/outboxd.service $(SYSCONFDIR)/logrotate.d/outboxd

install: build man
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(DATADIR)/docs \
	    $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/outboxd $(DESTDIR)$(SYSCONFDIR)/logrotate.d
	install -m 0755 $(BUILD)/outboxd $(DESTDIR)$(SBINDIR)/outboxd
	install -m 0644 $(BUILD)/man/outboxd.8 $(DESTDIR)$(MANDIR)/man8/outboxd.8
	install -m 0644 $(BUILD)/man/outboxd.conf.5 $(DESTDIR)$(MANDIR)/man5/outboxd.conf.5
	install -m 0644 $(RULES) $(DESTDIR)$(DATADIR)/outboxd-rules.yml
	install -m 0644 $(SHARE_DOCS) $(DESTDIR)$(DATADIR)/docs/
	sed -e 's#@SBINDIR@#$(SBINDIR)#g' -e 's#@SYSCONFDIR@#$(SYSCONFDIR)#g' packaging/systemd/outboxd.service \
	    >$(DESTDIR)$(UNITDIR)/outboxd.service && chmod 0644 $(DESTDIR)$(UNITDIR)/outboxd.service
	install -m 0644 packaging/logrotate/outboxd $(DESTDIR)$(SYSCONFDIR)/logrotate.d/outboxd
	test -e $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf || \
	    install -m 0640 packaging/outboxd.conf $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf

# Removes what install put there; a config the operator changed stays, and says so.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	if cmp -s packaging/outboxd.conf $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf; then \
	    rm -f $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf; \
	elif test -e $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf; then \
	    echo "uninstall: kept $(DESTDIR)$(SYSCONFDIR)/outboxd/outboxd.conf: it differs from the shipped one"; fi
	-rmdir $(DESTDIR)$(SYSCONFDIR)/outboxd $(DESTDIR)$(DATADIR)/docs $(DESTDIR)$(DATADIR) 2>/dev/null

# The Debian package, built from the committed tree plus the working
# tree's changes to tracked files, in a copy, so build/ and var/ never enter it.
deb:
	@bash packaging/deb.sh $(BUILD)/deb

test-package:
	bash tests/package/test_install.sh
	bash tests/package/test_deb.sh $(BUILD)/deb

# The alert rules in a live Prometheus against a running outboxd, Kafka stopped and resumed.
test-prometheus: build
	OB_BIN=$(abspath $(BUILD)/outboxd) bash tests/prometheus/live.sh

# The alert rules: promtool's syntax check and its unit tests of every alert.
check-rules:
	promtool check rules $(RULES)
	promtool test rules packaging/prometheus/outboxd-rules.test.yml

# `make bench`: our figures beside baselines measured in the same run, as
# ratios (bench/README.md). obbench is the C half, linked against the
# project's objects like the test binaries; bench/run.sh drives it.
BENCH_SRC := $(wildcard bench/*.c)
BENCH_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(BENCH_SRC))
BENCH_BIN := $(BUILD)/bench/obbench

$(BENCH_OBJ): bench/obbench.h

$(BENCH_BIN): $(BENCH_OBJ) $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lm

.PHONY: bench
bench: build stack-up
	$(MAKE) $(BENCH_BIN)
	OB_BIN=$(abspath $(BUILD)/outboxd) OBBENCH=$(abspath $(BENCH_BIN)) bash bench/run.sh

# Kafka Connect and Debezium for the bench's peers section (section 9), fetched once into var/peers.
.PHONY: bench-peers-deps
bench-peers-deps: deps
	@bash bench/peers/deps.sh
