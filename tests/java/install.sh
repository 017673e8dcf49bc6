#!/usr/bin/env bash
# Fetches what the JVM tests run (the Java client in six versions and Kafka's command-line
# tools) from Maven Central and compiles the test programs against each client version.
#
#   tests/java/poms/<set>/pom.xml      what each set is (Maven coordinates)
#   tests/java/.cache/<set>/lib/       its jars (mvn dependency:copy-dependencies)
#   tests/java/.cache/classes-<set>/   the programs compiled against that set: src/current
#                                      (4.x), src/old and src/old-admin (older clients)
#
# Idempotent and quick when nothing changed: a set is fetched again only when its pom changed,
# and sources are compiled again only when they (or the jars they compile against) changed.
# Needs java and javac 17+ and mvn 3.8+; the network is used only for Maven Central.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="$here/.cache"
mkdir -p "$cache"

# set -> the source trees under src/ compiled against it ("" = jars only). 0.10 has no
# AdminClient, so no old-admin.
declare -A SOURCES=(
  [clients-4.4.0]="current"
  [clients-3.9.2]="old old-admin"
  [clients-2.8.2]="old old-admin"
  [clients-1.1.1]="old old-admin"
  [clients-0.11.0.3]="old old-admin"
  [clients-0.10.2.2]="old"
  [tools-4.4.0]=""
)
SETS=(clients-4.4.0 clients-3.9.2 clients-2.8.2 clients-1.1.1 clients-0.11.0.3 clients-0.10.2.2
      tools-4.4.0)

for tool in java javac mvn sha256sum; do
  command -v "$tool" >/dev/null || { echo "install.sh: $tool is not installed" >&2; exit 1; }
done

# Maven and javac run for seconds: C1 only starts them faster.
export MAVEN_OPTS="${MAVEN_OPTS:-} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC"

digest() { cat "$@" | sha256sum | cut -d' ' -f1; }

fetch() {
  local set=$1 pom="$here/poms/$1/pom.xml" dir="$cache/$1"
  local want
  want="$(digest "$pom")"
  if [ -f "$dir/lib.sha256" ] && [ "$(cat "$dir/lib.sha256")" = "$want" ] && [ -d "$dir/lib" ]; then
    return 0
  fi
  echo "== fetching $set from Maven Central"
  rm -rf "$dir"
  mkdir -p "$dir"
  # Into a temporary directory first, so an interrupted fetch never looks complete.
  if ! mvn -B -q -f "$pom" dependency:copy-dependencies \
      -DoutputDirectory="$dir/lib.tmp" -DincludeScope=runtime >"$dir/mvn.log" 2>&1; then
    cat "$dir/mvn.log" >&2
    echo "install.sh: fetching $set failed" >&2
    exit 1
  fi
  mv "$dir/lib.tmp" "$dir/lib"
  echo "$want" >"$dir/lib.sha256"
}

compile() {
  local set=$1 out="$cache/classes-$1"
  local files=() want tree more
  for tree in ${SOURCES[$1]}; do
    mapfile -t more < <(find "$here/src/$tree" -name '*.java' | sort)
    [ ${#more[@]} -gt 0 ] || { echo "install.sh: no sources in src/$tree" >&2; exit 1; }
    files+=("${more[@]}")
  done
  want="$(digest "${files[@]}" "$cache/$set/lib.sha256")"
  if [ -f "$out/.sha256" ] && [ "$(cat "$out/.sha256")" = "$want" ]; then
    return 0
  fi
  echo "== compiling ${SOURCES[$1]// /, } against $set"
  rm -rf "$out" "$out.tmp"
  mkdir -p "$out.tmp"
  # Deprecations are expected: the old-client program uses poll(long) on purpose.
  javac -J-XX:TieredStopAtLevel=1 -J-XX:+UseSerialGC -nowarn -XDsuppressNotes \
    -Xlint:-deprecation -Xlint:-options -encoding UTF-8 \
    -cp "$cache/$set/lib/*" -d "$out.tmp" "${files[@]}"
  echo "$want" >"$out.tmp/.sha256"
  mv "$out.tmp" "$out"
}

for set in "${SETS[@]}"; do
  fetch "$set"
done
for set in "${SETS[@]}"; do
  [ -n "${SOURCES[$set]}" ] && compile "$set"
done

# -- Apache Kafka 4.4.0, the oracle of tests/python/test_differential.py ------------------
# The broker's jars (kafka_2.13, kafka-tools, a log4j binding) in .cache/kafka-server-4.4.0/lib;
# tests/python/kafka_oracle.py formats a storage directory and starts it from there. Fetched
# like the sets above (again only when its pom changed); nothing to compile.
fetch kafka-server-4.4.0

# -- Kafka Streams 4.4.0 and Kafka Connect 4.3.1 ------------------------------------------------
# tests/python/test_kafka_streams.py runs src/streams/WordCount.java (compiled against
# streams-4.4.0 into .cache/classes-streams-4.4.0); tests/python/test_kafka_connect.py runs the
# distributed worker from .cache/connect-4.3.1/lib (nothing to compile). Fetched and compiled
# like the sets above, again only when a pom or a source changed.
SOURCES[streams-4.4.0]="streams"
fetch streams-4.4.0
fetch connect-4.3.1
compile streams-4.4.0

exit 0
