# The two commands: `make demo` runs the example application, `make test` runs every test.
# Both need the Rust toolchain; anything else (protoc) they install themselves.

CARGO ?= cargo

.PHONY: demo pass test bench bench-cluster bench-pass audit-help protoc

# raft-proto (tikv's raft-rs) generates its message types with protoc at build time. Debian and
# Ubuntu ship it as protobuf-compiler; elsewhere install protoc and put it on PATH (or set PROTOC).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get -y -q
protoc:
	@command -v protoc >/dev/null 2>&1 || [ -n "$$PROTOC" ] || { \
		echo "make: installing protobuf-compiler (protoc), which raft-proto's build script needs"; \
		$(APT) install protobuf-compiler >/dev/null || { $(APT) update >/dev/null && $(APT) install protobuf-compiler >/dev/null; }; }

# The demo is built by `cargo ergon` with its actors instrumented by ergon's LLVM pass, so every
# audit entry carries real operation counts.
demo: protoc pass
	./target/release/cargo-ergon ergon build --release --locked -p ergon-cli -p ergon-examples --instrument ergon-actors,ergon-examples
	./target/ergon/release/cluster-demo

pass:
	$(CARGO) build --release --locked -p ergon-llvm-pass

test: protoc
	$(CARGO) test --workspace --locked

bench: protoc
	$(CARGO) bench --locked -p ergon-actors --bench gate

bench-cluster: protoc
	$(CARGO) bench --locked -p ergon-actors --bench replication

bench-pass:
	$(CARGO) bench --locked -p ergon-llvm-pass --bench overhead

audit-help:
	$(CARGO) run -q --release --locked -p ergon-cli -- audit --help
