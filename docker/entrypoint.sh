#!/bin/sh
# The image's entry point: `protolab ARGS`, so that `docker run IMAGE` serves every service
# (CMD is "serve"), `docker run IMAGE check` checks, `docker run IMAGE user add NAME` adds a
# user, and options alone (`docker run IMAGE --only smtp`) go to serve. Anything that is not
# a protolab command runs as given (`docker run -it IMAGE sh`). Settings also come from the
# environment (PROTOLAB_ONLY, PROTOLAB_CONFIG, PROTOLAB_DOMAIN, PROTOLAB_USERS...): README.
set -e
case "${1:-serve}" in
    -*) set -- protolab serve "$@" ;;
    serve|check|init|user|journal|http|smtp|pop3|imap|dns|dhcp|ftp|smb) set -- protolab "$@" ;;
    "") set -- protolab serve ;;
esac
if [ "$2" = serve ] && [ ! -w "${PROTOLAB_DATA:-/var/lib/protolab}" ]; then
    echo "protolab: ${PROTOLAB_DATA:-/var/lib/protolab} is not writable by $(id -un)" \
         "(a host folder mounted there must belong to uid $(id -u), or run with --user root)" >&2
    exit 1
fi
exec "$@"
