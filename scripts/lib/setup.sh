# Shared set-up for scripts/test and scripts/demo: Debian packages and a venv.
apt_install_missing() {
    local missing=()
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
    if [ ${#missing[@]} -gt 0 ]; then
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        echo "installing ${missing[*]} with apt-get" >&2
        $sudo apt-get update -qq >&2 || true
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
    fi
}

setup_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test,keyless]" >&2
}

setup_all() {
    apt_install_missing
    setup_venv
}
