#!/bin/bash
# testfixture-hook.sh - stands in for testfixture in a hooked run (see
# hook.tcl). run.sh copies it next to the real binary as `testfixture`.
# It runs the real testfixture with hook.tcl as its first script and with
# argv[0] set to this wrapper's own path, so that [info nameofexec] names
# the wrapper and every child testfixture the tests start is hooked too.
#   HYBRID_SUITE_REAL_TESTFIXTURE  the real binary
#   HYBRID_SUITE_HOOK              hook.tcl
exec -a "$0" "${HYBRID_SUITE_REAL_TESTFIXTURE:?}" "${HYBRID_SUITE_HOOK:?}" "$@"
