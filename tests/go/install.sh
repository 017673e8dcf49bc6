#!/usr/bin/env bash
# Builds what tests/python/test_go_clients.py and test_old_clients.py drive, into
# tests/go/.cache (which git ignores):
#   bin/franz, bin/sarama, bin/kafkago  current Go clients (module tests/go/current)
#   bin/confluentgo                     confluent-kafka-go (module tests/go/confluent, on its own
#                                       so that the others build without it)
#   bin/sarama122, bin/kafkago021       old Go clients (modules tests/go/sarama122, kafkago021)
#   burrow/usr/bin/Burrow               Burrow 1.2.1, Debian's package, extracted (not installed)
#   zookeeper/lib/*.jar                 ZooKeeper 3.9.4 from Maven Central, which Burrow needs
# and installs the Debian packages it needs when they are missing (a C compiler for cgo, kcat).
# Go modules come from the Go module proxy into Go's own module cache.
#
# Idempotent and quick when everything is current: a module is rebuilt only when its sources,
# go.mod, go.sum or the Go version change. Needs Go 1.26, Java 17 and Maven.
set -euo pipefail
cd "$(dirname "$0")"
HERE=$PWD
CACHE=$HERE/.cache
mkdir -p "$CACHE/bin" "$CACHE/stamps"

BURROW_VERSION=1.2.1
ZOOKEEPER_VERSION=3.9.4

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
apt_updated=""
apt_update() {
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
}

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)  # cgo: confluent-kafka-go, old sarama's zstd
command -v kcat >/dev/null || need_apt+=(kcat)
command -v java >/dev/null || need_apt+=(default-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need_apt[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}"
fi
command -v go >/dev/null || { echo "install.sh: Go 1.26 is required (go not on PATH)" >&2; exit 1; }

# -- Go programs -----------------------------------------------------------------------------
# module directory, then the binaries it builds (a package path: binary name from its last
# element, or "." with the name after a colon).
failed=()
build_module() {
  local module=$1
  shift
  local stamp_file=$CACHE/stamps/$module
  local stamp
  stamp=$( { go version; find "$HERE/$module" -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) \
      -print0 | sort -z | xargs -0 sha256sum; } | sha256sum | cut -d' ' -f1)
  local missing=""
  for target in "$@"; do
    local name=${target##*/}
    [[ $target == *:* ]] && name=${target#*:}
    [ -x "$CACHE/bin/$name" ] || missing=1
  done
  if [ -z "$missing" ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    return 0
  fi
  echo "== building Go module $module"
  local start=$SECONDS
  for target in "$@"; do
    local pkg=$target name=${target##*/}
    if [[ $target == *:* ]]; then
      pkg=${target%%:*}
      name=${target#*:}
    fi
    # -mod=readonly: go.mod and go.sum are committed and never rewritten here.
    if ! (cd "$HERE/$module" && go build -mod=readonly -trimpath -o "$CACHE/bin/$name" "$pkg"); then
      failed+=("$module ($name)")
      rm -f "$stamp_file"
      return 0
    fi
  done
  echo "$stamp" >"$stamp_file"
  echo "   built in $((SECONDS - start)) s"
}

build_module current ./cmd/franz ./cmd/sarama ./cmd/kafkago
build_module sarama122 .:sarama122
build_module kafkago021 .:kafkago021
build_module confluent .:confluentgo

# -- Burrow 1.2.1 from Debian, extracted into the cache -------------------------------------
BURROW=$CACHE/burrow/usr/bin/Burrow
if [ ! -x "$BURROW" ]; then
  echo "== fetching Debian's burrow package"
  apt-cache show burrow >/dev/null 2>&1 || apt_update
  tmp=$(mktemp -d)
  chmod 777 "$tmp"  # apt-get download drops to the _apt user, which must write here
  (cd "$tmp" && apt-get download -qq burrow)
  deb=$(ls "$tmp"/burrow_*.deb)
  version=$(dpkg-deb -f "$deb" Version)
  case $version in
    "$BURROW_VERSION"-*) ;;
    *) echo "install.sh: Debian's burrow is $version, the tests expect $BURROW_VERSION" >&2; exit 1 ;;
  esac
  rm -rf "$CACHE/burrow"
  dpkg-deb -x "$deb" "$CACHE/burrow"
  rm -rf "$tmp"
fi

# -- ZooKeeper from Maven Central (Burrow 1.2.1 cannot run without it) ----------------------
ZK=$CACHE/zookeeper
# metrics-core and snappy-java are needed at start-up but not brought by zookeeper's pom;
# slf4j-simple makes it log to stderr; the TLS natives (netty-tcnative) are left out.
ZK_POM=$(cat <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>sluice.test</groupId>
  <artifactId>zookeeper-for-burrow</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.zookeeper</groupId>
      <artifactId>zookeeper</artifactId>
      <version>$ZOOKEEPER_VERSION</version>
      <exclusions>
        <exclusion><groupId>io.netty</groupId><artifactId>netty-tcnative-boringssl-static</artifactId></exclusion>
        <exclusion><groupId>io.netty</groupId><artifactId>netty-tcnative-classes</artifactId></exclusion>
      </exclusions>
    </dependency>
    <dependency>
      <groupId>io.dropwizard.metrics</groupId><artifactId>metrics-core</artifactId><version>4.1.12.1</version>
    </dependency>
    <dependency>
      <groupId>org.xerial.snappy</groupId><artifactId>snappy-java</artifactId><version>1.1.10.5</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>2.0.13</version>
    </dependency>
  </dependencies>
</project>
EOF
)
ZK_STAMP=$(printf '%s' "$ZK_POM" | sha256sum | cut -c1-16)
if [ ! -f "$ZK/lib/.complete-$ZK_STAMP" ]; then
  echo "== fetching ZooKeeper $ZOOKEEPER_VERSION from Maven Central"
  rm -rf "$ZK"
  mkdir -p "$ZK"
  printf '%s\n' "$ZK_POM" >"$ZK/pom.xml"
  if ! mvn -B -q -f "$ZK/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$ZK/lib" >"$ZK/mvn.log" 2>&1; then
    cat "$ZK/mvn.log" >&2
    exit 1
  fi
  touch "$ZK/lib/.complete-$ZK_STAMP"
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "install.sh: these Go programs did not build: ${failed[*]}" >&2
  exit 1
fi
