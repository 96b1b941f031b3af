# Everyday recipes. CI runs `.ci/run`, which does not need just.

# build the kiln binary (target/release/kiln)
build:
    cargo build --release -p kiln-cli

# the whole test suite, as the README gives it (run as root: tests use real users and namespaces)
test:
    bash .ci/setup
    cargo test --workspace --locked

# formatting and lints, as CI checks them
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    cargo machete

# benchmarks recorded in docs/benchmarks.md
bench: build
    bench/check.sh
    cargo bench --workspace

# end-to-end tests of the real binary only
e2e:
    cargo test -p kiln-cli --tests

# a minute of fuzzing over parse and lowering
fuzz:
    bash fuzz/seed.sh
    cd fuzz && cargo +nightly fuzz run parse_lower -- -max_total_time=60

# kiln's main job: the Debian builder image (debootstrap, cached), a local
# registry, `kiln build examples/go-hello` and `podman run` of the result
demo: build
    bash .ci/setup
    examples/go-hello/demo.sh

# the BuildKit frontend image, built by kiln (kiln-frontend linked statically
# on the static base), pushed as REGISTRY/kiln-frontend:latest and :VERSION
frontend-image REGISTRY: build
    frontend/gateway/build-image.sh {{REGISTRY}}
