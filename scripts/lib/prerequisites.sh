# Installs the programs tusk's tests and `tusk dev` run for real: from Debian packages the
# PostgreSQL server and client tools, kubectl and cmake (zlib-ng's build); from PyPI, into a
# virtual environment under target/, the official Python Kubernetes client; from npm, into
# target/, the official JavaScript one. Nothing is downloaded from anywhere else. Sourced by scripts/test and scripts/dev.

apt_updated=false

apt_install() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing $*; install it (Debian: apt-get install $*) or run this script as root" >&2
        return 1
    fi
    if [ "$apt_updated" = false ]; then
        apt-get update -qq
        apt_updated=true
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The newest PostgreSQL server installed, as a bin directory such as /usr/lib/postgresql/15/bin.
postgres_bindir() {
    find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1
}

ensure_prerequisites() {
    local bindir
    bindir="$(postgres_bindir)"
    if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ] || [ ! -x "$bindir/pg_basebackup" ]; then
        echo "installing the PostgreSQL server (Debian package postgresql)" >&2
        apt_install postgresql postgresql-contrib
        bindir="$(postgres_bindir)"
    fi
    if ! command -v psql >/dev/null || ! command -v pgbench >/dev/null; then
        apt_install postgresql-client
    fi
    if ! command -v kubectl >/dev/null; then
        echo "installing kubectl" >&2
        # Debian ships kubectl in kubernetes-client; a kubectl package wins where a repository
        # offers one.
        apt_install kubectl 2>/dev/null || apt_install kubernetes-client
    fi
    if ! command -v cmake >/dev/null; then
        apt_install cmake
    fi
    if ! command -v tar >/dev/null || ! command -v gzip >/dev/null; then
        apt_install tar gzip
    fi
    # The local runtime's tests run real programs in pods (python3's http.server), and the
    # end-to-end tests look for leftover processes with ps.
    if ! command -v python3 >/dev/null; then
        apt_install python3
    fi
    if ! command -v ps >/dev/null; then
        apt_install procps
    fi
    # A claim's volume is an ext4 image of the claimed size (mkfs.ext4, e2fsck and resize2fs
    # from e2fsprogs): loop-mounted by a runtime running as root, mounted with fuse2fs through
    # the setuid fusermount otherwise. Debian 12's fuse2fs uses FUSE 2, whose fusermount comes
    # in the package fuse (which replaces fuse3).
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v resize2fs >/dev/null; then
        apt_install e2fsprogs
    fi
    if [ "$(id -u)" -ne 0 ] && { ! command -v fuse2fs >/dev/null || ! command -v fusermount >/dev/null; }; then
        apt_install fuse2fs fuse
    fi
    # PostgreSQL refuses to run as root; tests and the local runtime run it as this user.
    if ! id postgres >/dev/null 2>&1; then
        useradd --system --create-home --shell /usr/sbin/nologin postgres
    fi
    export PATH="$bindir:$PATH"
}

# The client-library tests drive the sandbox with the official Python client from PyPI, pinned,
# in a virtual environment of its own (target/test-tools/python), so neither the system's Python
# nor the user's is touched. The tests find it there, or at TUSK_TEST_PYTHON.
PYTHON_CLIENT_VERSION=37.0.3

ensure_python_client() {
    local venv="target/test-tools/python"
    if "$venv/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$PYTHON_CLIENT_VERSION')" 2>/dev/null; then
        return
    fi
    echo "installing the Python Kubernetes client $PYTHON_CLIENT_VERSION from PyPI" >&2
    rm -rf "$venv"
    # Debian's python3 creates virtual environments only with python3-venv installed.
    if ! python3 -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        apt_install python3-venv
        python3 -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "kubernetes==$PYTHON_CLIENT_VERSION"
}

# The JavaScript client, @kubernetes/client-node from npm, pinned, in a directory of its own
# (target/test-tools/node), run with the machine's Node. The tests find it there, or in the
# directory TUSK_TEST_NODE names. 1.4 is the newest line that runs on Node 20 (2.x
# needs Node 22).
NODE_CLIENT_VERSION=1.4.0

ensure_node_client() {
    local project="target/test-tools/node"
    local installed="$project/node_modules/@kubernetes/client-node/package.json"
    if ! command -v npm >/dev/null; then
        echo "installing Node and npm (Debian packages nodejs, npm)" >&2
        apt_install nodejs npm
    fi
    if [ -f "$installed" ] && grep -q "\"version\": \"$NODE_CLIENT_VERSION\"" "$installed"; then
        return
    fi
    echo "installing the JavaScript Kubernetes client $NODE_CLIENT_VERSION from npm" >&2
    mkdir -p "$project"
    npm install --prefix "$project" --no-audit --no-fund --silent --no-save \
        "@kubernetes/client-node@$NODE_CLIENT_VERSION"
}
