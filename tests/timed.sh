#!/usr/bin/env bash
# Runs one step of make test and prints how long it took, so that a CI log shows where make test's
# time goes (the brief keeps make test under 60 minutes; this is what to trim by).
#
#   tests/timed.sh LABEL COMMAND [ARG...]
label=$1
shift
start=$(date +%s)
"$@"
status=$?
echo "== $label: $(($(date +%s) - start)) s"
exit $status
