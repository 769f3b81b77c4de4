# The two commands: `make demo` runs the example application, `make test` runs every test.
# Both need the Rust toolchain; anything else (protoc) they install themselves.

CARGO ?= cargo

.PHONY: demo calibrate instrumented pass test bench bench-cluster bench-tcp bench-reads bench-pass bench-energy audit-help protoc netfaults

# raft-proto (tikv's raft-rs) generates its message types with protoc at build time. Debian and
# Ubuntu ship it as protobuf-compiler; elsewhere install protoc and put it on PATH (or set PROTOC).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -q
protoc:
	@command -v protoc >/dev/null 2>&1 || [ -n "$$PROTOC" ] || { \
		echo "make: installing protobuf-compiler (protoc), which raft-proto's build script needs"; \
		$(APT) install protobuf-compiler >/dev/null || { $(APT) update >/dev/null && $(APT) install protobuf-compiler >/dev/null; }; }

# The partition tests cut links between node processes with iptables inside a network namespace
# (iproute2's `ip netns`), as root; Debian ships both as packages.
netfaults:
	@command -v iptables >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 || { \
		echo "make: installing iptables and iproute2, which the partition tests need"; \
		$(APT) install iptables iproute2 >/dev/null || { $(APT) update >/dev/null && $(APT) install iptables iproute2 >/dev/null; }; }

# The demo and the calibration are built by `cargo ergon` with ergon's LLVM pass instrumenting the
# actors, the demo and the calibration workloads, so every audit entry carries real operation
# counts and calibration fits real ones. One build serves both.
instrumented: protoc pass
	./target/release/cargo-ergon ergon build --release --locked -p ergon-cli -p ergon-examples --instrument ergon-actors,ergon-examples,ergon-workloads

# The cluster demo (tutorial accounting, the reference design's story), then the power-cap demo
# (physical accounting, examples/physical.toml).
demo: instrumented
	./target/ergon/release/cluster-demo
	./target/ergon/release/power-cap-demo

# Fits joules per operation to this machine's energy counter and writes ergon-energy-profile.json
# (the documented default where the counter is not RAPL). ARGS passes options, e.g. ARGS="--repeats 6".
calibrate: instrumented
	./target/ergon/release/ergon energy calibrate $(ARGS)

pass:
	$(CARGO) build --release --locked -p ergon-llvm-pass

# The partition tests (cli/tests/partitions.rs) need root, which CI has, and what netfaults installs.
# The second line builds the optional, GPL-3.0 rapl-energy backend too, so it cannot rot unseen;
# the third and fourth run the TCP benchmarks briefly in a debug build, so that they keep working
# (their figures come from make bench-tcp and make bench-reads).
test: protoc netfaults
	$(CARGO) test --workspace --locked
	$(CARGO) test --locked -p ergon-energy --features rapl-energy --lib
	ERGON_BENCH_OPS=50 ERGON_BENCH_SECS=3 $(CARGO) test --locked -p ergon-cli --bench tcp
	ERGON_BENCH_OPS=50 $(CARGO) test --locked -p ergon-cli --bench consistency

bench: protoc
	$(CARGO) bench --locked -p ergon-actors --bench gate

bench-cluster: protoc
	$(CARGO) bench --locked -p ergon-actors --bench replication

# Five `ergon node` processes with mutual TLS and durable logs, driven by the Rust client.
bench-tcp: protoc
	$(CARGO) bench --locked -p ergon-cli --bench tcp

# Reads at each consistency level and a join (learner to voter) on five node processes.
bench-reads: protoc
	$(CARGO) bench --locked -p ergon-cli --bench consistency

# What measuring costs, side by side: operation counters, each energy counter this machine has, and
# the gate's metering of one message (prints RESULT lines).
bench-energy: pass
	./target/release/cargo-ergon ergon build --release --locked -p ergon-pass-fixtures --instrument ergon-pass-fixtures,ergon-workloads
	./target/ergon/release/meters

bench-pass:
	$(CARGO) bench --locked -p ergon-llvm-pass --bench overhead

audit-help:
	$(CARGO) run -q --release --locked -p ergon-cli -- audit --help
