# The two commands: `make demo` runs the example application, `make test` runs every test.
# Both need only the Rust toolchain.

CARGO ?= cargo

.PHONY: demo test bench audit-help

demo:
	$(CARGO) build --release --locked -p ergon-cli -p ergon-examples
	./target/release/cluster-demo

test:
	$(CARGO) test --workspace --locked

bench:
	$(CARGO) bench --locked -p ergon-actors --bench gate

audit-help:
	$(CARGO) run -q --release --locked -p ergon-cli -- audit --help
