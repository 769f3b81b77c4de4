# The two commands: `make demo` runs the example application, `make test` runs every test.
# Both need only the Rust toolchain.

CARGO ?= cargo

.PHONY: demo pass test bench bench-pass audit-help

# The demo is built by `cargo ergon` with its actors instrumented by ergon's LLVM pass, so every
# audit entry carries real operation counts.
demo: pass
	./target/release/cargo-ergon ergon build --release --locked -p ergon-cli -p ergon-examples --instrument ergon-actors,ergon-examples
	./target/ergon/release/cluster-demo

pass:
	$(CARGO) build --release --locked -p ergon-llvm-pass

test:
	$(CARGO) test --workspace --locked

bench:
	$(CARGO) bench --locked -p ergon-actors --bench gate

bench-pass:
	$(CARGO) bench --locked -p ergon-llvm-pass --bench overhead

audit-help:
	$(CARGO) run -q --release --locked -p ergon-cli -- audit --help
