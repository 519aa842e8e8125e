# Shared by the bench/ scripts: installing what they need and building tusk. Sourced, not run.

# Installs the Debian packages named, with apt (through sudo unless root), after one update.
bench_apt_install() {
    [ $# -gt 0 ] || return 0
    echo "installing $* with apt..." >&2
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Runs `cargo build` with the arguments given, in the repository at $1, after making sure the
# build's own tools are there: zlib-ng's build script needs cmake, which a fresh Debian lacks.
bench_cargo_build() {
    local root=$1
    shift
    command -v cmake >/dev/null || bench_apt_install cmake
    (cd "$root" && CARGO_INCREMENTAL=0 cargo build -q "$@")
}
