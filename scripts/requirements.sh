# What the test suites need from the machine: the ONE list that scripts/test and .ci/run both
# read (bash, sourced; defining functions is all it does). Each row names a group, a check, what
# fixes it and who needs it:
#   build    every run (cargo test included)
#   netns    tests/e2e and the VIP mover test (cargo): network namespaces; skipped by --skip-e2e
#   compose  the Docker compose drill; skipped by --skip-compose
# The fix is a Debian package list, `rustup:COMPONENT`, `@venv` (python3.X-venv for the python3
# on PATH), or `!` when no package can fix it (the reason then says what to do).
# shellcheck shell=bash

_req_rows() {
  cat <<'ROWS'
build|command -v cc|gcc libc6-dev|rustc links through cc
build|_req_venv_works|@venv|scripts/setup-venv makes the Python venv (python3 -m venv needs ensurepip)
build|cargo fmt --version|rustup:rustfmt|the rustfmt suite
build|cargo clippy --version|rustup:clippy|the clippy suite
build|command -v openssl|openssl|the TLS tests make certificates with the openssl CLI
build|command -v etcd|etcd-server|the supervisor's etcd lease tests (cargo test) and tests/e2e
netns|command -v ip|iproute2|network namespaces (tests/e2e, the VIP mover test)
netns|command -v arping|iputils-arping|gratuitous ARP (tests/e2e, the VIP mover test)
netns|command -v iptables|iptables|dropping one link or the lease store in tests/e2e (the fencing scenarios)
netns|command -v etcdctl|etcd-client|reading the lease record into the evidence of a failed fencing run
netns|_req_is_root|!|network namespaces need root: run as root, or pass --skip-e2e
compose|command -v docker-compose|docker-compose|the compose drill drives docker-compose (1.29)
compose|command -v nsenter && command -v unshare|util-linux|the compose drill runs a Python client in a container's namespace (nsenter)
compose|timeout 30 docker info|!|the compose drill needs a Docker engine that answers `docker info`: install and start Docker, or pass --skip-compose
ROWS
}

_req_venv_works() {
  local probe rc
  probe="$(mktemp -d)"
  python3 -m venv "$probe/venv" >/dev/null 2>&1
  rc=$?
  rm -rf "$probe"
  return "$rc"
}

_req_is_root() { [[ $(id -u) -eq 0 ]]; }

_req_venv_package() { echo "python$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"; }

# req_check GROUP...: sets REQ_APT (Debian packages to install), REQ_RUSTUP (components),
# REQ_MISSING (one line per missing thing: "what: fix") and REQ_UNFIXABLE (lines no package fixes).
# Returns 0 when nothing is missing.
req_check() {
  REQ_APT=() REQ_RUSTUP=() REQ_MISSING=() REQ_UNFIXABLE=()
  local group check fix why g want
  while IFS='|' read -r group check fix why; do
    want=""
    for g in "$@"; do [[ $g == "$group" ]] && want=1; done
    [[ -n $want ]] || continue
    bash -c "$(declare -f _req_venv_works _req_is_root); $check" >/dev/null 2>&1 && continue
    case $fix in
      '!') REQ_UNFIXABLE+=("$why") ;;
      rustup:*)
        REQ_RUSTUP+=("${fix#rustup:}")
        REQ_MISSING+=("$why: rustup component add ${fix#rustup:}")
        ;;
      @venv)
        fix="$(_req_venv_package)"
        REQ_APT+=("$fix")
        REQ_MISSING+=("$why: apt-get install $fix")
        ;;
      *)
        # shellcheck disable=SC2206 # a row's fix is a space-separated package list
        REQ_APT+=($fix)
        REQ_MISSING+=("$why: apt-get install $fix")
        ;;
    esac
  done < <(_req_rows)
  ((${#REQ_APT[@]} + ${#REQ_RUSTUP[@]} + ${#REQ_UNFIXABLE[@]} == 0))
}

_req_as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo -n "$@"; fi; }

# req_can_install: root, or sudo without a password (never a prompt: CI has no stdin).
req_can_install() { [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; }

# req_install: installs what req_check found installable, non-interactively, each step bounded.
req_install() {
  if ((${#REQ_APT[@]})); then
    echo "requirements: apt-get install ${REQ_APT[*]}"
    _req_as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q </dev/null || return 1
    _req_as_root env DEBIAN_FRONTEND=noninteractive timeout 900 \
      apt-get install -y -q --no-install-recommends "${REQ_APT[@]}" </dev/null || return 1
  fi
  local c
  for c in "${REQ_RUSTUP[@]}"; do
    echo "requirements: rustup component add $c"
    timeout 600 rustup component add "$c" </dev/null || return 1
  done
}

# req_ensure GROUP...: checks; installs what is missing when it can; otherwise (or when something
# no package fixes is missing) prints every missing thing with its fix and returns 1.
req_ensure() {
  req_check "$@" && return 0
  if ((${#REQ_UNFIXABLE[@]} == 0)) && req_can_install; then
    req_install && req_check "$@" && return 0
  fi
  local line
  echo "requirements: the test suites need what is missing here:" >&2
  for line in "${REQ_MISSING[@]}" "${REQ_UNFIXABLE[@]}"; do echo "  - $line" >&2; done
  if ((${#REQ_APT[@]})); then
    echo "  get the packages with: sudo apt-get install -y ${REQ_APT[*]}" >&2
  fi
  return 1
}
