# safety-gate container image: one static binary on a distroless base.
#
#   docker build -t REGISTRY/safety-gate:TAG .
#
# Not built by this project's CI (its machines have no container engine).
# The build command below is the one checked by hand: the resulting binary
# serves from an empty root directory as uid 65532, with no /etc, no shell
# and no libraries.

FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# crt-static links glibc into the binary, so the runtime image needs no
# libraries and no dynamic loader. --target makes RUSTFLAGS apply to the
# binary only: build scripts and proc-macros must stay dynamic. uname -m
# picks the triple for the platform being built (x86_64 or aarch64).
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" \
 && cp "target/$target/release/safety-gate" /safety-gate \
 && ldd /safety-gate 2>&1 | grep -Eq 'statically linked|not a dynamic executable'

# distroless/static: CA certificates, tzdata and a passwd entry for
# "nonroot" (65532), nothing else: no shell, no package manager, no libc.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /safety-gate /safety-gate
# Defaults for `docker run`; in the cluster the Deployment mounts its
# ConfigMap over this directory.
COPY policies/ /etc/safety-gate/policies/
# Two glibc malloc arenas instead of one per thread (the binary links glibc
# statically): with one per thread, a 10-minute soak of 1 MB reviews
# fragmented them and RSS crept up 19 % after warm-up (README, soak).
ENV MALLOC_ARENA_MAX=2
# Numeric, so runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
EXPOSE 8443 9090
ENTRYPOINT ["/safety-gate"]
# The Deployment passes the same flags (deploy/base/deployment.yaml). Bind
# addresses are IP literals: nothing is resolved at startup (incident 5).
CMD ["serve", "--listen=0.0.0.0:8443", "--admin-listen=0.0.0.0:9090", \
     "--policies=/etc/safety-gate/policies", \
     "--tls-cert=/etc/safety-gate/tls/tls.crt", "--tls-key=/etc/safety-gate/tls/tls.key"]
