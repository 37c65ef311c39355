#!/usr/bin/env bash
# Fetch the jars of the Apache Kafka broker the test lane and the benchmarks run
# (ops/kafka/run.py) into <repo>/.kafka/<version>/libs, with Maven. Idempotent: skipped
# when the jars for this pom and version are already there. Installs Java 17 and Maven
# with apt-get when they are missing (root needed for that step only).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VERSION="${SYNCGOV_KAFKA_VERSION:-$(tr -d '[:space:]' < "$HERE/VERSION")}"
DEST="$ROOT/.kafka/$VERSION"
STAMP="$DEST/.pom.sha256"
want="$( (cat "$HERE/pom.xml"; echo "$VERSION") | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -f "$DEST/libs/kafka_2.13-$VERSION.jar" ]]; then
    exit 0
fi

java_major() {
    java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1 |
        awk '{ print ($1 == 1 ? $2 : $1) }'
}
need_apt=()
if ! command -v java >/dev/null 2>&1 || [[ "$(java_major)" -lt 17 ]]; then need_apt+=(openjdk-17-jre-headless); fi
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [[ ${#need_apt[@]} -gt 0 ]]; then
    if [[ "$(id -u)" -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "ops/kafka/install.sh: missing ${need_apt[*]} (Java 17+ and Maven fetch and run Apache Kafka);" \
             "install them, or run this script as root on Debian/Ubuntu" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
command -v java >/dev/null 2>&1 || { echo "ops/kafka/install.sh: no java after apt-get install" >&2; exit 1; }
[[ "$(java_major)" -ge 17 ]] || { echo "ops/kafka/install.sh: java is $(java_major), Kafka needs 17+" >&2; exit 1; }

tmp="$DEST/libs.partial"
rm -rf "$tmp"
mkdir -p "$tmp"
started=$(date +%s)
if ! mvn -q -B -f "$HERE/pom.xml" -Dkafka.version="$VERSION" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$tmp" >"$DEST/mvn.log" 2>&1; then
    echo "ops/kafka/install.sh: Maven could not fetch org.apache.kafka:kafka_2.13:$VERSION; see $DEST/mvn.log:" >&2
    tail -20 "$DEST/mvn.log" >&2
    exit 1
fi
[[ -f "$tmp/kafka_2.13-$VERSION.jar" ]] || { echo "ops/kafka/install.sh: no kafka_2.13-$VERSION.jar after Maven" >&2; exit 1; }
rm -rf "$DEST/libs"
mv "$tmp" "$DEST/libs"
echo "$want" > "$STAMP"
echo "Apache Kafka $VERSION: $(ls "$DEST/libs" | wc -l) jars in ${DEST#$ROOT/}/libs ($(( $(date +%s) - started )) s)"
