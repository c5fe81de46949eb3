#!/bin/sh
# A muster worker in POSIX sh and etcdctl, written from PROTOCOL.md alone: no muster code.
# The interop test (tests/tests/etcd/interop.rs) runs it against a muster master.
#
# usage: worker.sh PREFIX NAME ADDR CPUS [KEY=VALUE...]
#
# It registers NAME in the group under PREFIX (PROTOCOL.md, "Register"), renews its lease
# every TTL/3 and, when etcd says the lease is gone, registers again with the same
# incarnation and its current metadata. It reads commands on standard input, one a line:
#
#   update CPUS [KEY=VALUE...]   rewrite the record with this metadata ("Update"); the
#                                arguments are split at spaces
#   leave                        leave the group ("Leave") and exit 0
#
# End of input and SIGTERM leave too. It reports each step on standard output, one a line:
# "registered LEASE", "updated", "update-deferred" (the lease was lost: the next
# registration writes the metadata), "lost LEASE", "reregistered LEASE", "left".
#
# Exit status: 0 after leaving; 1 when another live process holds the name, or etcd
# fails; 2 for bad arguments; 3 when this incarnation was evicted.
#
# Environment:
#   ETCDCTL             the etcdctl command, split at spaces (default "etcdctl"), e.g.
#                       "etcdctl --endpoints=http://10.0.0.1:2379" or
#                       "docker exec -i CONTAINER etcdctl"; etcdctl 3.4 or newer
#   MUSTER_TTL          the lease TTL in seconds (default 10)
#   MUSTER_INCARNATION  this process's incarnation, decimal (default: 56 random bits)
#
# Limits of this script, not of the protocol: the prefix, the name, label keys and values
# may not contain '"', '\' or control characters (it would have to escape them twice: for
# JSON and for etcdctl's txn syntax).

set -u

ETCDCTL=${ETCDCTL:-etcdctl}
ttl=${MUSTER_TTL:-10}

die() {
    status=$1
    shift
    echo "worker.sh: $*" >&2
    exit "$status"
}

[ $# -ge 4 ] || die 2 "usage: worker.sh PREFIX NAME ADDR CPUS [KEY=VALUE...]"
prefix=$1
name=$2
addr=$3
shift 3
case $prefix in */) ;; *) prefix="$prefix/" ;; esac

# plain WHAT TEXT: fails unless TEXT is free of the characters this script cannot quote.
plain() {
    case $2 in
    *'"'* | *'\'* | *[[:cntrl:]]*) die 2 "$1 ${2:-} contains '\"', '\\' or a control character; this script cannot write it" ;;
    esac
}

plain prefix "$prefix"
plain name "$name"
plain addr "$addr"
# PROTOCOL.md, "Names": 1 to 128 characters, no '/', no whitespace, not '.' or '..'.
case $name in
'' | . | .. | */* | *[[:space:]]*) die 2 "invalid name '$name'" ;;
esac
# (wc -m counts characters in the current locale: in the C locale, bytes, which is stricter.)
[ "$(printf '%s' "$name" | wc -m)" -le 128 ] || die 2 "name '$name' is longer than 128 characters"

# A fresh incarnation for this process: 56 random bits, below 2^53 * 128 and 2^63 alike,
# so that sh arithmetic holds it.
if [ -n "${MUSTER_INCARNATION:-}" ]; then
    incarnation=$MUSTER_INCARNATION
else
    incarnation=0
    for byte in $(od -An -N7 -tu1 /dev/urandom); do
        incarnation=$((incarnation * 256 + byte))
    done
fi
case $incarnation in '' | *[!0-9]*) die 2 "MUSTER_INCARNATION must be a decimal number" ;; esac

record_key="${prefix}members/$name"
live_key="${prefix}alive/$name"
# PROTOCOL.md, "Eviction markers": the incarnation as 16 lowercase hex digits.
marker_key="${prefix}evicted/$name/$(printf '%016x' "$incarnation")"

state=$(mktemp -d) || die 1 "cannot make a state directory"
trap 'rm -rf "$state"' EXIT

# set_metadata CPUS [KEY=VALUE...]: the metadata the next record write carries.
set_metadata() {
    case ${1:-} in '' | *[!0-9]*) die 2 "CPUS must be a number, not '${1:-}'" ;; esac
    cpus=$1
    shift
    labels=
    for label in "$@"; do
        key=${label%%=*}
        value=${label#*=}
        [ "$key" != "$label" ] && [ -n "$key" ] || die 2 "label '$label' is not KEY=VALUE"
        plain "label key" "$key"
        plain "label value" "$value"
        labels="$labels${labels:+,}\"$key\":\"$value\""
    done
    # PROTOCOL.md, "The record": every field typed; the incarnation a JSON number.
    printf '{"name":"%s","addr":"%s","cpus":%s,"labels":{%s},"incarnation":%s}' \
        "$name" "$addr" "$cpus" "$labels" "$incarnation" >"$state/record.new"
    mv "$state/record.new" "$state/record"
}

# ctl ARGS...: etcdctl with ARGS, reading nothing (a command such as "docker exec -i" would
# pass this script's commands on to it).
ctl() {
    $ETCDCTL "$@" </dev/null
}

# etcdctl's txn syntax takes a value as a Go string literal: '"' and '\' escaped.
go_quote() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/[\\"]/\\&/g')"
}

# txn: runs the transaction on standard input; succeeds when etcd applied it, and leaves
# the revision it was applied at in $revision.
txn() {
    out=$($ETCDCTL txn -w json) || die 1 "etcdctl txn failed"
    rest=${out#*\"revision\":}
    revision=${rest%%[!0-9]*}
    case $out in *'"succeeded":true'*) return 0 ;; *) return 1 ;; esac
}

# register: grants a lease and registers on it, in one transaction: the liveness key only if
# absent and this incarnation not evicted, and the record.
register() {
    granted=$(ctl lease grant "$ttl") || die 1 "etcdctl lease grant failed"
    set -- $granted
    [ "${1:-}" = lease ] || die 1 "unexpected answer to lease grant: $granted"
    lease=$2
    if txn <<EOF; then
c("$live_key") = "0"
c("$marker_key") = "0"

put --lease=$lease "$live_key" $(go_quote "{\"incarnation\":$incarnation}")
put "$record_key" $(go_quote "$(cat "$state/record")")


EOF
        # Our liveness key was created at this revision: it is ours while its mod revision
        # stays there (PROTOCOL.md, "Guards").
        echo "$lease" >"$state/lease"
        echo "$revision" >"$state/revision"
        return 0
    fi
    ctl lease revoke "$lease" >/dev/null 2>&1
    if [ -n "$(ctl get --keys-only "$marker_key")" ]; then
        echo 3 >"$state/stop"
        echo "worker.sh: incarnation $incarnation of $name was evicted" >&2
    else
        echo 1 >"$state/stop"
        echo "worker.sh: another live process holds the name $name" >&2
    fi
    return 1
}

# renew: keeps the lease alive every TTL/3; registers again when etcd says it is gone.
renew() {
    trap - EXIT
    period=$((ttl / 3))
    [ "$period" -ge 1 ] || period=1
    while :; do
        sleep "$period"
        lease=$(cat "$state/lease")
        ctl lease keep-alive --once "$lease" >/dev/null 2>&1 && continue
        # Gone, or etcd unreachable? Only "expired" means registering again.
        case $(ctl lease timetolive "$lease" 2>&1) in
        *expired*) ;;
        *) continue ;;
        esac
        echo "lost $lease"
        if ! register; then
            kill -TERM $$
            exit 0
        fi
        echo "reregistered $(cat "$state/lease")"
    done
}

# update CPUS [KEY=VALUE...]: rewrites the record while the liveness key is still ours.
update() {
    set_metadata "$@"
    ours=$(cat "$state/revision")
    if txn <<EOF; then
m("$live_key") = "$ours"

put "$record_key" $(go_quote "$(cat "$state/record")")


EOF
        echo updated
    else
        echo update-deferred
    fi
}

# leave: deletes both keys in one transaction while the liveness key is ours, else (the
# lease was lost) only the record while no process holds the name; then revokes the lease.
leave() {
    kill "$renewer" 2>/dev/null
    wait "$renewer" 2>/dev/null
    ours=$(cat "$state/revision")
    if ! txn <<EOF; then
m("$live_key") = "$ours"

del "$record_key"
del "$live_key"


EOF
        txn <<EOF
c("$live_key") = "0"

del "$record_key"


EOF
    fi
    ctl lease revoke "$(cat "$state/lease")" >/dev/null 2>&1
    echo left
    exit 0
}

stopped() {
    if [ -f "$state/stop" ]; then
        kill "$renewer" 2>/dev/null
        exit "$(cat "$state/stop")"
    fi
    leave
}

set_metadata "$@"
register || exit "$(cat "$state/stop")"
echo "registered $(cat "$state/lease")"
renew &
renewer=$!
trap stopped TERM INT

while read -r command args; do
    case $command in
    update) update $args ;;
    leave) leave ;;
    '') ;;
    *) echo "worker.sh: unknown command '$command'" >&2 ;;
    esac
    [ -f "$state/stop" ] && stopped
done
leave
